"""The team set-up: docker-compose.yml, Dockerfile, .env.example and ``midipix deploy``.

Docker is not needed: the compose file is checked statically against the code it configures (the
settings tasks/storage/settings.py reads, the work pools flows/deployments.py deploys to, the torch pin of ./dev),
``docker compose config`` runs when a Docker with the compose plugin is present, and ``midipix deploy`` and a
process worker run against a real Prefect API.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"

# ${VAR}, ${VAR:-default}, ${VAR-default}; "$$" is a literal "$" (compose's escape)
REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")
CREDENTIAL_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN|_USER$", re.IGNORECASE)


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """Compose's interpolation of one string, with ``env`` (default: no variables set, so the defaults)."""
    env = env or {}

    def sub(m: re.Match) -> str:
        name, op, default = m.group(1), m.group(2), m.group(3) or ""
        value = env.get(name)
        if value is None or (op == ":-" and value == ""):
            return default
        return value

    parts = text.split("$$")
    return "$".join(REF.sub(sub, p) for p in parts)


def refs(text: str) -> list[tuple[str, str | None]]:
    """The (variable, default) references of a string, ``$$`` escapes left out."""
    return [(m.group(1), m.group(3) if m.group(2) else None)
            for part in text.split("$$") for m in REF.finditer(part)]


def strings(node):
    """Every string in a parsed YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: str(v) for k, v in env.items()}


def command(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def depends_on(service: dict) -> dict[str, dict]:
    deps = service.get("depends_on") or {}
    return {d: {} for d in deps} if isinstance(deps, list) else deps


def gpu_devices(service: dict) -> list[dict]:
    devices = ((service.get("deploy") or {}).get("resources") or {}).get("reservations", {}).get("devices") or []
    return [d for d in devices if d.get("driver") == "nvidia" or "gpu" in (d.get("capabilities") or [])]


def settings_env_names() -> set[str]:
    """The environment variables tasks/storage/settings.py reads, from its pydantic model (not a copy of the list)."""
    from pydantic import AliasChoices

    from tasks.storage.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(c.upper() for c in alias.choices if isinstance(c, str))
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


def worker_pool(service: dict) -> str | None:
    cmd = command(service)
    if cmd[:3] != ["prefect", "worker", "start"]:
        return None
    for flag in ("--pool", "-p"):
        if flag in cmd:
            return cmd[cmd.index(flag) + 1]
    raise AssertionError(f"a worker without --pool: {cmd}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


def midipix_services(services) -> dict[str, dict]:
    return {n: s for n, s in services.items() if str(s.get("image", "")).startswith("midipix:")}


def env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG\s+([A-Za-z_][A-Za-z0-9_]*)=(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE))


def dockerfile_runs() -> list[str]:
    """The RUN instructions of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line[4:].strip() for line in text.splitlines() if line.startswith("RUN ")]


TORCH_REQ = re.compile(r"torch($|[=<>!~\[ ;])")
PIP_VALUE_OPTIONS = {"-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url",
                     "-f", "--find-links", "-t", "--target"}


def pip_installs(runs: list[str]) -> list[list[str]]:
    """The argument lists of every ``pip install`` in the RUN instructions, in order."""
    found = []
    for run in runs:
        for part in run.split("&&"):
            m = re.search(r"\bpip3?\s+install\b", part)
            if m:
                found.append(shlex.split(part[m.end():]))
    return found


def requirements(argv: list[str]) -> list[str]:
    """The positional requirements of a ``pip install`` argument list (options and their values left out)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in PIP_VALUE_OPTIONS:
            skip = True
        elif not a.startswith("-"):
            out.append(a)
    return out


# -- the compose file ---------------------------------------------------------------------------------


def test_the_team_services_and_their_volumes(compose, services):
    for name in ("postgres", "prefect-server", "minio", "minio-init", "deploy", "worker-cpu", "worker-gpu"):
        assert name in services, name
    assert {"postgres-data", "minio-data", "midipix-cache"} <= set(compose["volumes"])

    def mounts(service: str) -> set[str]:
        return {v.split(":")[0] for v in services[service].get("volumes", [])}

    assert "postgres-data" in mounts("postgres")
    assert "minio-data" in mounts("minio")
    for worker in ("worker-cpu", "worker-gpu"):
        cache = environment(services[worker])["MIDIPIX_CACHE_DIR"]
        assert f"midipix-cache:{cache}" in services[worker]["volumes"], worker

    server = services["prefect-server"]
    db = interpolate(environment(server)["PREFECT_API_DATABASE_CONNECTION_URL"])
    assert re.fullmatch(r"postgresql\+asyncpg://[^:@/]+:[^@/]+@postgres:5432/\w+", db), db
    assert command(server)[:3] == ["prefect", "server", "start"]
    assert any(interpolate(p).endswith(":4200:4200") for p in server["ports"])
    assert "/api/health" in " ".join(server["healthcheck"]["test"])
    assert any(interpolate(p).endswith(":9001:9001") for p in services["minio"]["ports"])
    assert "--console-address" in command(services["minio"])


def test_every_dependency_waits_for_health_or_completion(services):
    checked = 0
    for name, service in services.items():
        for dep, spec in depends_on(service).items():
            target = services[dep]
            if "healthcheck" in target:
                want = "service_healthy"
            elif target.get("restart", "no") == "no":  # a one-shot job
                want = "service_completed_successfully"
            else:
                raise AssertionError(f"{name} depends on {dep}, which has neither a health check nor an end")
            assert spec.get("condition") == want, f"{name} → {dep}: {spec}"
            checked += 1
    assert checked >= 6
    for name, service in services.items():  # every long-running service says when it is ready
        if service.get("restart", "no") != "no":
            assert "healthcheck" in service, name


def test_the_gpu_worker_is_optional(services):
    gpu = services["worker-gpu"]
    assert gpu.get("profiles") == ["gpu"]
    (device,) = gpu_devices(gpu)
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    default = {n: s for n, s in services.items() if not s.get("profiles")}
    assert "worker-cpu" in default and "worker-gpu" not in default
    for name, service in default.items():  # `docker compose up` needs no GPU and no profiled service
        assert not gpu_devices(service), name
        assert not set(depends_on(service)) - set(default), name


def test_midipix_containers_set_only_what_settings_reads(services, monkeypatch):
    from tasks.storage.settings import PREFECT_DEFAULTS, Settings

    try:
        from prefect.settings import Settings as PrefectSettings
        from prefect.settings.legacy import _get_valid_setting_names
        prefect_names = set(_get_valid_setting_names(PrefectSettings))
    except ImportError:  # a private helper of prefect's; the midipix half of the check still runs
        prefect_names = None
    ours = settings_env_names()
    assert {"MIDIPIX_STORE", "AWS_SECRET_ACCESS_KEY"} <= ours  # the parsing itself works
    for name, service in midipix_services(services).items():
        for key in environment(service):
            if key.startswith("PREFECT_"):
                assert prefect_names is None or key in prefect_names or key in PREFECT_DEFAULTS, f"{name}: {key}"
            else:
                assert key in ours, f"{name} sets {key}, which tasks/storage/settings.py does not read"

    # and the values line up: a worker's settings reach the bucket minio-init creates, with MinIO's account
    minio_env = {k: interpolate(v) for k, v in environment(services["minio"]).items()}
    bucket = interpolate(environment(services["minio-init"])["MINIO_BUCKET"])
    for worker in ("worker-cpu", "worker-gpu"):
        for key in ours:
            monkeypatch.delenv(key, raising=False)
        for key, value in environment(services[worker]).items():
            if key in ours:  # PREFECT_* would reach this process's Prefect client
                monkeypatch.setenv(key, interpolate(value))
        settings = Settings()
        assert settings.store.startswith(f"s3://{bucket}/"), settings.store
        opts = settings.storage_options(settings.store)
        assert opts["endpoint_url"] == "http://minio:9000"
        assert opts["key"] == minio_env["MINIO_ROOT_USER"]
        assert opts["secret"] == minio_env["MINIO_ROOT_PASSWORD"]
        assert Path(settings.cache_dir).is_absolute()  # a process worker runs flows in a temporary folder


def test_credentials_only_as_variable_references(compose, services):
    found = 0
    for name, service in services.items():
        for key, value in environment(service).items():
            if CREDENTIAL_NAME.search(key):
                assert REF.fullmatch(value), f"{name}: {key} is a literal, not a ${{...}} reference"
                found += 1
            for userinfo in re.findall(r"://([^/@\s]*)@", REF.sub("\0", value)):  # user:password@host
                assert re.fullmatch(r"\0:\0", userinfo), f"{name}: literal credentials in {key}"
                found += 1
        for arg in ((service.get("build") or {}).get("args") or {}):
            assert not CREDENTIAL_NAME.search(arg), f"{name}: build argument {arg} would bake a credential in"
    assert found >= 6
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    keys = [key for line in re.findall(r"^(?:ENV|ARG)\s+(.*)$", text, flags=re.MULTILINE)
            for key in re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?==|\s*$)", line)]
    assert "TORCH_INDEX_URL" in keys and "PYTHONUNBUFFERED" in keys  # the parsing itself works
    for key in keys:
        assert not CREDENTIAL_NAME.search(key) and not key.startswith(("AWS_", "MINIO_")), key
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored  # the real .env never enters the build context


def test_env_example_lists_every_variable_with_the_compose_default():
    example = env_example()
    defaults: dict[str, set[str | None]] = {}
    for text in strings(yaml.safe_load(COMPOSE.read_text())):
        for name, default in refs(text):
            defaults.setdefault(name, set()).add(default)
    assert defaults, "no ${...} references in docker-compose.yml"
    assert set(defaults) == set(example), set(defaults) ^ set(example)
    for name, seen in defaults.items():
        assert seen == {example[name]}, f"{name}: compose defaults {seen}, .env.example {example[name]!r}"


def test_workers_poll_the_pools_the_deployments_go_to(services):
    from flows.cli import _parser
    from flows.deployments import CPU_POOL, GPU_POOL, REBUILD_CRON, pool_deployments

    deploy = [interpolate(a) for a in command(services["deploy"])]
    assert deploy[:2] == ["midipix", "deploy"]
    args = _parser().parse_args(deploy[1:])  # the real CLI: an unknown option fails here
    assert args.cron == REBUILD_CRON
    groups = pool_deployments(cron=args.cron, source=args.source, store=args.store,
                              cpu_pool=args.cpu_pool or CPU_POOL, gpu_pool=args.gpu_pool or GPU_POOL)
    polled = {worker_pool(s): n for n, s in services.items() if worker_pool(s)}
    assert set(polled) == set(groups), (polled, list(groups))

    where = {f"{d.flow_name}/{d.name}": pool for pool, group in groups.items() for d in group}
    assert not gpu_devices(services[polled[where["build-dataset/rebuild-dataset"]]])
    assert not services[polled[where["build-dataset/rebuild-dataset"]]].get("profiles")
    assert gpu_devices(services[polled[where["train-model/train-model"]]])
    for group in groups.values():  # module paths: the worker imports the flow from the installed package
        for d in group:
            module, _, attr = d.entrypoint.rpartition(".")
            assert ":" not in d.entrypoint and module.startswith("flows.")
            assert getattr(__import__(module, fromlist=[attr]), attr).name == d.flow_name


# -- the Dockerfile --------------------------------------------------------------------------------------


def test_the_image_installs_cpu_torch_unless_told_otherwise(services):
    args = dockerfile_args()
    assert args["TORCH_INDEX_URL"] == CPU_TORCH_INDEX
    pin = re.search(r'"torch==([0-9][^"]*)"', (ROOT / "dev").read_text()).group(1)
    assert args["TORCH_VERSION"] == pin, "the image's torch differs from ./dev's"

    from packaging.requirements import Requirement

    prefect = next(Requirement(r) for r in __import__("tomllib").loads((ROOT / "pyproject.toml").read_text())
                   ["project"]["dependencies"] if r.startswith("prefect"))
    assert args["PREFECT_VERSION"] in prefect.specifier

    installs = pip_installs(dockerfile_runs())
    torch = [(i, argv) for i, argv in enumerate(installs) if any(TORCH_REQ.match(a) for a in requirements(argv))]
    (first, argv), *later = torch
    assert first == 0, "something is installed before torch"
    assert requirements(argv) == ["torch==${TORCH_VERSION}"]
    assert argv[argv.index("--index-url") + 1] == "${TORCH_INDEX_URL}"
    assert "--extra-index-url" not in argv
    for _, argv in later:  # a later install may only pin torch to the build already there
        pins = [a for a in requirements(argv) if TORCH_REQ.match(a)]
        assert pins == ["torch==$(python -c 'import torch; print(torch.__version__)')"], argv
    assert any("/src" in requirements(argv) or "." in requirements(argv) for argv in installs[1:])
    assert not re.search(r"^FROM\s+\S*(nvidia|cuda|pytorch)", DOCKERFILE.read_text(), flags=re.MULTILINE | re.IGNORECASE)

    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0")

    def build_index(service: str) -> str:
        return interpolate(services[service]["build"]["args"]["TORCH_INDEX_URL"])

    assert build_index("worker-cpu") == CPU_TORCH_INDEX
    assert build_index("prefect-server") == CPU_TORCH_INDEX
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", build_index("worker-gpu"))


def test_the_build_context_leaves_data_and_environments_out():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", "bench/out", "data", "checkpoints", "midipix-data", ".midipix-cache", ".git"} <= ignored
    assert not {"README.md", "pyproject.toml", "flows", "tasks", "models", "storage_schemas"} & ignored


def _docker_compose() -> list[str] | None:
    """Compose v2 (the plugin or the standalone binary), or None; v1 knows neither ``name:`` nor JSON output."""
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if not shutil.which(cmd[0]):
            continue
        out = subprocess.run([*cmd, "version", "--short"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and int(out.stdout.strip().lstrip("v").split(".")[0] or 0) >= 2:
            return cmd
    return None


@pytest.mark.skipif(_docker_compose() is None, reason="no docker compose here: the file is checked statically")
@pytest.mark.parametrize("profile", [[], ["--profile", "gpu"]], ids=["default", "gpu"])
def test_docker_compose_accepts_the_file(profile):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINIO_", "POSTGRES_"))}
    out = subprocess.run([*_docker_compose(), "-f", str(COMPOSE), *profile, "config", "--format", "json"],
                         capture_output=True, text=True, check=False, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    names = set(json.loads(out.stdout)["services"])
    assert ("worker-gpu" in names) == bool(profile)


# -- midipix deploy against a real Prefect API --------------------------------------------------------


def test_deploy_creates_process_pools_and_module_path_deployments(prefect_api, capsys):
    import asyncio

    from prefect.client.orchestration import get_client

    from flows.cli import main
    from flows.deployments import CPU_POOL, GPU_POOL, deploy_to_pools

    first = deploy_to_pools(cron="0 3 * * *", source="generated:2:0.1")
    assert first == {CPU_POOL: ["build-dataset/rebuild-dataset"],
                     GPU_POOL: ["train-model/train-model", "evaluate-runs/evaluate-runs"]}
    capsys.readouterr()
    assert main(["deploy", "--cron", "0 3 * * *", "--source", "generated:2:0.1"]) == 0  # again: idempotent
    printed = capsys.readouterr().out
    assert f"{CPU_POOL}: build-dataset/rebuild-dataset" in printed and f"{GPU_POOL}: train-model/train-model" in printed

    async def check():
        async with get_client() as client:
            for pool in (CPU_POOL, GPU_POOL):
                assert (await client.read_work_pool(pool)).type == "process"
            rebuild = await client.read_deployment_by_name("build-dataset/rebuild-dataset")
            train = await client.read_deployment_by_name("train-model/train-model")
            evaluate = await client.read_deployment_by_name("evaluate-runs/evaluate-runs")
        assert (rebuild.work_pool_name, train.work_pool_name, evaluate.work_pool_name) == (CPU_POOL, GPU_POOL, GPU_POOL)
        assert evaluate.entrypoint == "flows.evaluate.evaluate_runs" and not evaluate.schedules
        assert (rebuild.entrypoint, train.entrypoint) == ("flows.build.build_dataset", "flows.train.train_one")
        assert not rebuild.pull_steps and not train.pull_steps
        assert [s.schedule.cron for s in rebuild.schedules] == ["0 3 * * *"]
        assert not train.schedules
        assert rebuild.parameters["params"]["source"] == "generated:2:0.1"

    asyncio.run(check())


@pytest.mark.integration
def test_a_process_worker_runs_the_rebuild_from_its_pool(prefect_api, tmp_path):
    """What worker-cpu does: `prefect worker start --pool midipix-cpu` picks a run and builds the dataset."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from flows.deployments import CPU_POOL, deploy_to_pools

    store = tmp_path / "store"
    params = {"params": {"source": "generated:2:0.1", "store": str(store), "name": "from-pool",
                         "encodings": ["enc2"]}}

    deploy_to_pools(cron=None)

    async def submit():
        async with get_client() as client:
            dep = await client.read_deployment_by_name("build-dataset/rebuild-dataset")
            return (await client.create_flow_run_from_deployment(dep.id, parameters=params)).id

    run_id = asyncio.run(submit())
    work = tmp_path / "elsewhere"  # not the repository: the flow is imported from the installed package
    work.mkdir()
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "MIDIPIX_CACHE_DIR": str(tmp_path / "cache"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    prefect = str(Path(sys.executable).parent / "prefect")
    started = time.monotonic()
    out = subprocess.run([prefect, "worker", "start", "--pool", CPU_POOL, "--type", "process", "--run-once"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    async def final_state():
        async with get_client() as client:
            while time.monotonic() - started < 240:
                state = (await client.read_flow_run(run_id)).state
                if state.is_final():
                    return state
                await asyncio.sleep(1)

    state = asyncio.run(final_state())
    assert state is not None and state.type.value == "COMPLETED", (state, out.stdout[-3000:], out.stderr[-3000:])
    assert (store / "tables" / "from-pool" / "CURRENT").is_file()
    assert (store / "datasets" / "from-pool.enc2" / "CURRENT").is_file()
