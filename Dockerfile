# The histosweep worker image: a CUDA build of PyTorch plus the package with its S3 extra.
#   docker build -t histosweep:local .
#   docker run --rm --gpus all -e HISTOSWEEP_STORAGE=... histosweep:local worker STUDY --gpus all
# The same image runs `create`, `dashboard` and every other command (ENTRYPOINT histosweep).
FROM python:3.11-slim

# NOTE: PyPI's Linux x86_64 torch wheels are CUDA builds that carry their own CUDA runtime
# (nvidia-* wheels), so no CUDA base image is needed: the host only provides the driver,
# which the NVIDIA Container Toolkit mounts in. Same pins as scripts/test.sh.
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
# Another CUDA version: pass PyTorch's wheel index for it as --build-arg TORCH_INDEX_URL=...
ARG TORCH_INDEX_URL=""

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    HISTOSWEEP_CACHE=/cache

# Torch first, in its own layer: it is gigabytes and changes far less often than our code.
# hadolint ignore=DL3013
RUN pip install "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
        ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}

WORKDIR /opt/histosweep
COPY pyproject.toml README.md ./
COPY histosweep ./histosweep
COPY data ./data
COPY model ./model
COPY search ./search
COPY bundle ./bundle
COPY storage ./storage
COPY fleet ./fleet
COPY trial_files ./trial_files
# The package itself: its dependency ranges live in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install ".[s3]" \
    && useradd --create-home --uid 1000 --shell /usr/sbin/nologin histosweep \
    && mkdir -p /cache /data /work \
    && chown histosweep:histosweep /cache /work

# NOTE: a fresh named volume mounted on /cache inherits this ownership, so the non-root
# user can write the image cache without a chown at start. A numeric UID lets Kubernetes'
# runAsNonRoot check it.
USER 1000:1000
WORKDIR /work
ENTRYPOINT ["histosweep"]
CMD ["worker", "--help"]
