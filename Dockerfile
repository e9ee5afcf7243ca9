# syntax=docker/dockerfile:1
# The midipix image of the team set-up (docker-compose.yml): Prefect server, `midipix deploy`, workers.
# CPU torch by default; the GPU worker is built with TORCH_INDEX_URL set to a CUDA wheel index, e.g.
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t midipix:gpu .
# No credentials in here: they reach the containers as environment variables at run time (.env).
FROM python:3.11-slim

# torch as in ./dev; prefect as the test suite ran it, so that the server and every worker agree
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PREFECT_VERSION=3.9.1

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, from the chosen index only: a bare "torch" from PyPI would pull a multi-GB CUDA build
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

# the other dependencies of pyproject.toml in their own layer (rebuilt only when pyproject.toml changes);
# torch is pinned to the build installed above, so pip can never swap it for PyPI's CUDA build
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt "prefect==${PREFECT_VERSION}" \
        "torch==$(python -c 'import torch; print(torch.__version__)')" \
    && python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"

# then the project itself (flows, tasks, models, storage_schemas) into site-packages
COPY . /src
RUN pip install --no-deps /src && rm -rf /src /tmp/pyproject.toml /tmp/requirements.txt

# a non-root user; /cache is the mount point of the shared cache volume (MIDIPIX_CACHE_DIR)
RUN useradd --create-home --uid 10001 midipix && mkdir /cache && chown midipix /cache
USER midipix
WORKDIR /home/midipix

CMD ["midipix", "--help"]
