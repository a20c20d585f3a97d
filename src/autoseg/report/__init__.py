"""The run's self-contained HTML report and its plots.

``write_report(path, summary, projection_2d, hide_table_contents)`` writes one ``report.html``
with the EDA, the k search, the cluster profiles, the plots and the explanation, with no
external request of any kind. The plots are in :mod:`autoseg.report.plots`.
"""

from autoseg.report.html import write_report

__all__ = ["write_report"]
