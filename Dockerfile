# syntax=docker/dockerfile:1
# autoseg, GPU image: cuDF / cuML / CuPy and XGBoost on CUDA, with the CPU path as fallback.
#
#   docker build -t autoseg:gpu .                                   # CUDA 12 wheels (-cu12)
#   docker build -t autoseg:gpu-cu13 --build-arg CUDA_MAJOR=13 --build-arg CUDA_VERSION=13.0.1 .
#   docker run --rm --gpus all -v "$PWD/out:/output" autoseg:gpu demo
#
# The same image runs on a CPU-only host (no --gpus): with the default `--device auto` autoseg
# logs why the GPU is not usable and runs the scikit-learn / NumPy / XGBoost-CPU path.
#
# Base: the CUDA *base* flavour (driver set-up for the NVIDIA container toolkit: NVIDIA_* env,
# cudart, the driver-version check). The CUDA libraries themselves (cuBLAS, cuFFT, cuRAND,
# cuSOLVER, cuSPARSE, NVRTC, nvJitLink, NCCL) come from the wheels that cudf/cuml/cupy pull in
# (`cuda-toolkit[...]==12.*`, found by CuPy through cuda-pathfinder), so the `runtime` flavour
# would only add a second, older copy (~2.5 GB). `--build-arg CUDA_FLAVOR=runtime` still works.
#
# Conventions (docs/containers.md): everything a run writes goes under /output; input files
# are read from /data; uid/gid 10001; `autoseg` is PID 1 (exec-form ENTRYPOINT) and handles
# SIGTERM itself (exit 130, nothing written).

ARG CUDA_VERSION=12.8.1
ARG CUDA_FLAVOR=base
ARG UBUNTU_VERSION=24.04

############################ builder: a wheel, then a venv ############################
FROM nvcr.io/nvidia/cuda:${CUDA_VERSION}-${CUDA_FLAVOR}-ubuntu${UBUNTU_VERSION} AS builder

ARG CUDA_VERSION
# Selects the wheels: the `gpu` extra (cupy-cuda12x, cudf-cu12, cuml-cu12) for 12, `gpu-cu13` for 13.
ARG CUDA_MAJOR=12
# The RAPIDS wheels are on PyPI too; set empty to use PyPI alone (pip otherwise retries an
# unreachable index for every package).
ARG NVIDIA_INDEX_URL=https://pypi.nvidia.com
# Further extras of autoseg, comma-separated (e.g. --build-arg EXTRAS=dask).
ARG EXTRAS=""

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
 && apt-get install --yes --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# The dependencies first, from pyproject.toml alone (container/gpu_requirements.py): this ~7 GB
# layer is reused when only the source changes.
COPY pyproject.toml README.md ./
COPY container/gpu_requirements.py /tmp/gpu_requirements.py
RUN case "${CUDA_VERSION}" in \
        "${CUDA_MAJOR}".*) ;; \
        *) echo "CUDA_MAJOR=${CUDA_MAJOR} does not match CUDA_VERSION=${CUDA_VERSION}" >&2; exit 2 ;; \
    esac \
 && python3 -m venv /opt/autoseg \
 && python3 /tmp/gpu_requirements.py pyproject.toml "${CUDA_MAJOR}" "${EXTRAS}" > /tmp/requirements.txt \
 && /opt/autoseg/bin/pip install ${NVIDIA_INDEX_URL:+--extra-index-url "${NVIDIA_INDEX_URL}"} \
        --requirement /tmp/requirements.txt

# Then autoseg itself (--no-deps: everything it needs is there, and pip check proves it). The
# build fails unless the GPU stack imports: cudf, cuml, cupy and xgboost load without a GPU (the
# device is probed at run time), so a broken or incomplete RAPIDS install stops here.
COPY src ./src
RUN /opt/autoseg/bin/pip wheel --no-deps --wheel-dir /dist . \
 && /opt/autoseg/bin/pip install --no-deps /dist/autoseg-*.whl \
 && /opt/autoseg/bin/pip check \
 && /opt/autoseg/bin/python -m pip uninstall --yes pip setuptools \
 && find /opt/autoseg/lib -depth -type d -name tests -exec rm -rf {} + \
 && /opt/autoseg/bin/autoseg version \
 && /opt/autoseg/bin/python -c "import cudf, cuml, cupy, xgboost; print('cudf', cudf.__version__, 'cuml', cuml.__version__, 'cupy', cupy.__version__, 'xgboost', xgboost.__version__)"

############################ final: runtime only, no compilers ############################
FROM nvcr.io/nvidia/cuda:${CUDA_VERSION}-${CUDA_FLAVOR}-ubuntu${UBUNTU_VERSION}

ARG VERSION=0.1.0
ARG SOURCE_URL=https://github.com/OWNER/autoseg
LABEL org.opencontainers.image.title="autoseg" \
      org.opencontainers.image.description="Segment any table with k-means, choose k by silhouette, explain every cluster with tree SHAP (GPU image: cuDF, cuML, CuPy, XGBoost on CUDA; CPU fallback)." \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

# python3 only (the venv's interpreter): no -dev headers, no compilers.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install --yes --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 autoseg \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin autoseg \
 && mkdir -p /output /data \
 && chown 10001:10001 /output

COPY --from=builder /opt/autoseg /opt/autoseg

ENV PATH=/opt/autoseg/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    CUPY_CACHE_DIR=/tmp/cupy \
    NUMBA_CACHE_DIR=/tmp/numba \
    AUTOSEG_STORE=duckdb:/output/autoseg.duckdb \
    AUTOSEG_OUTPUT_DIR=/output/autoseg-output \
    AUTOSEG_MODEL_DIR=/output/models

WORKDIR /output
USER 10001:10001
STOPSIGNAL SIGTERM

ENTRYPOINT ["autoseg"]
CMD ["--help"]
