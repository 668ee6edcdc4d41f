#!/usr/bin/env bash
# vllm-gcp: GCE boot script for one vLLM replica (template).
#
# components/startup_script.py renders this file: it replaces the single marker line below with a block of
# `readonly NAME=value` assignments quoted with shlex.quote. Everything else in this file is static, so the
# script that runs on the VM is exactly this file plus that block. It runs as root on every boot
# (GCE `startup-script` metadata) and is idempotent. See docs/gce-boot.md.
#
# Secrets: only Secret Manager resource names are in this script. Their values are fetched on every boot
# with the VM service account's metadata-server token and written to a root-only env file on tmpfs
# (/run/vllm-secrets/vllm.env). That directory is bind-mounted read-only into the container, whose
# entrypoint sources the file and execs `vllm serve`: the values are never on a command line, never in the
# container's Docker config (`docker inspect`, /var/lib/docker), never on a disk, never logged.
#
# Reboots: dockerd restarts the container (--restart unless-stopped) before this script runs. /etc/fstab
# mounts the model cache before docker.service starts, and the script restarts the container once the
# secrets are written and checks that its cache bind mount is on the cache disk (docs/gce-boot.md).
#
# Test hooks (for tests/test_startup_script.py only; real VMs never set them). A URL override must point to
# http://127.0.0.1, anything else is refused:
#   VLLM_GCP_TEST_ROOT                    prefix for every host path (/run, /mnt, /dev/disk/by-id, /etc, /proc)
#   VLLM_GCP_TEST_METADATA_URL            instead of http://metadata.google.internal
#   VLLM_GCP_TEST_SECRET_MANAGER_URL      instead of https://secretmanager.googleapis.com
#   VLLM_GCP_TEST_OPS_AGENT_INSTALLER_URL instead of Google's add-google-cloud-ops-agent-repo.sh
set -Eeuo pipefail
umask 077

# @@VLLM_GCP_RENDERED_PARAMS@@

readonly ROOT="${VLLM_GCP_TEST_ROOT:-}"
readonly METADATA_URL="${VLLM_GCP_TEST_METADATA_URL:-http://metadata.google.internal}"
readonly SECRET_MANAGER_URL="${VLLM_GCP_TEST_SECRET_MANAGER_URL:-https://secretmanager.googleapis.com}"
readonly OPS_AGENT_INSTALLER_URL="${VLLM_GCP_TEST_OPS_AGENT_INSTALLER_URL:-https://dl.google.com/cloudagents/add-google-cloud-ops-agent-repo.sh}"

readonly STATE_DIR="${ROOT}/run/vllm-gcp"            # /run is tmpfs: nothing here survives a reboot
readonly SECRETS_DIR="${STATE_DIR}/secrets"           # token, registry login: removed when this script exits
readonly AUTH_HEADER_FILE="${SECRETS_DIR}/authorization-header"
readonly TOKEN_FILE="${SECRETS_DIR}/metadata-token.json"
# The container's secrets, on tmpfs too; kept until shutdown because the container re-reads them whenever
# Docker restarts it. The directory is never removed: the container's bind mount holds on to its inode.
readonly VLLM_SECRETS_DIR="${ROOT}/run/vllm-secrets"
readonly ENV_FILE="${VLLM_SECRETS_DIR}/vllm.env"
readonly VLLM_SECRETS_DIR_IN_CONTAINER="/run/vllm-secrets"
# The container's command: `sh -c ENTRYPOINT_SCRIPT vllm-serve ARGS...`. The image's own entrypoint is
# `vllm serve`; this one exports the secrets from the file first, so they never enter Docker's config.
readonly ENTRYPOINT_SCRIPT="set -a; . ${VLLM_SECRETS_DIR_IN_CONTAINER}/vllm.env; set +a; exec vllm serve \"\$@\""
readonly DEVICE="${ROOT}/dev/disk/by-id/google-${MODEL_CACHE_DEVICE_NAME}"
readonly MOUNT_POINT="${ROOT}/mnt/disks/${MODEL_CACHE_DEVICE_NAME}"
readonly FSTAB="${ROOT}/etc/fstab"
# nofail: boot goes on without the disk (a blank local SSD after a stop). x-systemd.before: when the disk is
# there, systemd mounts it before dockerd restarts the container, so the cache bind mount sees the disk.
readonly FSTAB_OPTIONS="defaults,nofail,discard,x-systemd.before=docker.service,x-systemd.device-timeout=30s"
readonly PROC_DIR="${ROOT}/proc"
readonly OPS_AGENT_DIR="${ROOT}/etc/google-cloud-ops-agent"
readonly HF_CACHE_IN_CONTAINER="/root/.cache/huggingface"
readonly CONFIG_LABEL="vllm-gcp.config-sha256"

# Small Python helpers (python3 ships with the boot image). They read JSON on stdin, so a token or secret
# value never passes through argv or a shell variable.
# shellcheck disable=SC2016  # single quotes on purpose: this is Python source, not shell
readonly PY_AUTH_HEADER='import json, sys
print("Authorization: Bearer " + json.load(sys.stdin)["access_token"])'
# shellcheck disable=SC2016
readonly PY_ACCESS_TOKEN='import json, sys
sys.stdout.write(json.load(sys.stdin)["access_token"])'
# argv: ENV_NAME SECRET_RESOURCE. Writes "ENV_NAME='value'", quoted for the entrypoint's `sh` to source.
# One trailing newline (as `echo ... | gcloud secrets create` leaves) is dropped, other line breaks refused.
# shellcheck disable=SC2016
readonly PY_SECRET_TO_ENV_LINE='import base64, json, shlex, sys
name, resource = sys.argv[1], sys.argv[2]
value = base64.b64decode(json.load(sys.stdin)["payload"]["data"]).decode("utf-8").rstrip("\r\n")
if not value or any(c in value for c in "\r\n\0"):
    sys.exit(f"secret {resource} is empty or contains a line break; store the value on one line")
sys.stdout.write(f"{name}={shlex.quote(value)}\n")'

PHASE="init"

log() {
  printf '%s vllm-gcp-boot phase=%s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "${PHASE}" "$*"
}

die() {
  printf '%s vllm-gcp-boot phase=%s: ERROR: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "${PHASE}" "$*" >&2
  exit 1
}

on_error() {
  # Line number and phase only: the failing command's text could reference secret files.
  printf '%s vllm-gcp-boot phase=%s: ERROR: command failed (exit %s) at line %s\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "${PHASE}" "$1" "$2" >&2
}
trap 'on_error "$?" "${LINENO}"' ERR

cleanup() {
  rm -rf "${SECRETS_DIR}"
}
trap cleanup EXIT

begin_phase() {
  PHASE="$1"
  log "start"
}

check_test_hooks() {
  local name value
  for name in VLLM_GCP_TEST_METADATA_URL VLLM_GCP_TEST_SECRET_MANAGER_URL VLLM_GCP_TEST_OPS_AGENT_INSTALLER_URL; do
    value="${!name:-}"
    if [[ -n "${value}" && "${value}" != http://127.0.0.1:* ]]; then
      die "${name}=${value} is refused: test hooks may only point to http://127.0.0.1:PORT"
    fi
  done
  if [[ -n "${ROOT}" ]]; then
    log "TEST MODE: host paths under ${ROOT}, metadata ${METADATA_URL}, secret manager ${SECRET_MANAGER_URL}"
  fi
}

preflight() {
  local tool
  for tool in curl python3 docker sha256sum; do
    command -v "${tool}" >/dev/null 2>&1 || die "required tool '${tool}' is missing; the boot image must be ${EXPECTED_BOOT_IMAGE}"
  done
  mkdir -p "${STATE_DIR}" "${SECRETS_DIR}" "${VLLM_SECRETS_DIR}"
  # Docker may have created VLLM_SECRETS_DIR (mode 755) when it restarted the container at boot.
  chmod 700 "${STATE_DIR}" "${SECRETS_DIR}" "${VLLM_SECRETS_DIR}"
}

check_nvidia_driver() {
  local deadline=$((SECONDS + DRIVER_WAIT_SECONDS)) versions="" first major gpus
  while true; do
    if command -v nvidia-smi >/dev/null 2>&1 \
      && versions="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null)" \
      && [[ -n "${versions}" ]]; then
      break
    fi
    if ((SECONDS >= deadline)); then
      if ! command -v nvidia-smi >/dev/null 2>&1; then
        die "NVIDIA driver missing: nvidia-smi not found after ${DRIVER_WAIT_SECONDS}s. vLLM needs driver >= ${MIN_DRIVER_MAJOR}; use boot image ${EXPECTED_BOOT_IMAGE} (it ships the driver) and attach ${GPU_COUNT} GPU(s)."
      fi
      die "NVIDIA driver not working: nvidia-smi reports no GPU after ${DRIVER_WAIT_SECONDS}s. Check that the instance has ${GPU_COUNT} GPU(s) attached and that the driver loaded (dmesg | grep -i nvidia); with Secure Boot on, an unsigned nvidia module is refused (mokutil --sb-state)."
    fi
    log "waiting for the NVIDIA driver (nvidia-smi not ready yet)"
    sleep 5
  done
  first="${versions%%$'\n'*}"
  first="${first//[[:space:]]/}"
  major="${first%%.*}"
  [[ "${major}" =~ ^[0-9]+$ ]] || die "cannot parse the NVIDIA driver version '${first}' reported by nvidia-smi"
  if ((10#${major} < MIN_DRIVER_MAJOR)); then
    die "NVIDIA driver mismatch: found ${first}, need >= ${MIN_DRIVER_MAJOR} (the vLLM image is a CUDA 13 build). Use boot image ${EXPECTED_BOOT_IMAGE}; not starting vLLM."
  fi
  gpus="$(printf '%s\n' "${versions}" | grep -c .)"
  if ((gpus < GPU_COUNT)); then
    die "expected ${GPU_COUNT} GPU(s), nvidia-smi sees ${gpus}; not starting vLLM."
  fi
  if ! command -v nvidia-container-cli >/dev/null 2>&1 && ! command -v nvidia-ctk >/dev/null 2>&1; then
    die "NVIDIA Container Toolkit missing (no nvidia-container-cli / nvidia-ctk): 'docker run --gpus' cannot work. Use boot image ${EXPECTED_BOOT_IMAGE}."
  fi
  log "NVIDIA driver ${first} OK (>= ${MIN_DRIVER_MAJOR}), ${gpus} GPU(s) visible"
}

mount_model_cache() {
  local waited=0 fs_type
  until [[ -e "${DEVICE}" ]]; do
    ((waited < DISK_WAIT_SECONDS)) \
      || die "model cache disk ${DEVICE} not found after ${DISK_WAIT_SECONDS}s: attach a disk with device name '${MODEL_CACHE_DEVICE_NAME}'"
    log "waiting for ${DEVICE}"
    sleep 2
    waited=$((waited + 2))
  done
  fs_type="$(blkid -o value -s TYPE "${DEVICE}" || true)"
  if [[ -z "${fs_type}" ]]; then
    # Only a blank disk is formatted: a reboot, or a rerun of this script, keeps the cached weights.
    log "${DEVICE} has no filesystem: formatting ext4"
    mkfs.ext4 -q -m 0 -E lazy_itable_init=0,lazy_journal_init=0,discard -L model-cache "${DEVICE}"
    fs_type=ext4
  else
    log "${DEVICE} already has a ${fs_type} filesystem: keeping it"
  fi
  ensure_fstab_entry "${fs_type}"
  mkdir -p "${MOUNT_POINT}"
  if mountpoint -q "${MOUNT_POINT}"; then
    log "${MOUNT_POINT} already mounted"
  else
    mount -o discard,defaults "${DEVICE}" "${MOUNT_POINT}"
    log "mounted ${DEVICE} on ${MOUNT_POINT}"
  fi
  mkdir -p "${MOUNT_POINT}/huggingface"
}

ensure_fstab_entry() {
  # One line for MOUNT_POINT, by UUID: a stale line (a local SSD formatted again after a stop gets a new
  # UUID) is replaced, any other line is kept as it is, and an unchanged file is not rewritten.
  local fs_type="$1" uuid entry line mount_point present=0 lines=0
  local -a kept=()
  uuid="$(blkid -o value -s UUID "${DEVICE}" || true)"
  [[ -n "${uuid}" ]] || die "blkid reports no UUID for ${DEVICE}: cannot write its /etc/fstab entry"
  entry="UUID=${uuid} ${MOUNT_POINT} ${fs_type} ${FSTAB_OPTIONS} 0 2"
  if [[ -f "${FSTAB}" ]]; then
    while IFS= read -r line || [[ -n "${line}" ]]; do
      lines=$((lines + 1))
      mount_point=""
      [[ "${line}" =~ ^[[:space:]]*# ]] || read -r _ mount_point _ <<<"${line}"
      if [[ "${line}" == "${entry}" && ${present} -eq 0 ]]; then
        present=1
      elif [[ "${mount_point}" != "${MOUNT_POINT}" ]]; then
        kept+=("${line}")
      fi
    done <"${FSTAB}"
    if ((present && lines == ${#kept[@]} + 1)); then
      log "/etc/fstab entry for ${MOUNT_POINT} present"
      return 0
    fi
  fi
  mkdir -p "${FSTAB%/*}"
  {
    if ((${#kept[@]})); then printf '%s\n' "${kept[@]}"; fi
    printf '%s\n' "${entry}"
  } >"${FSTAB}.vllm-gcp.tmp"
  chmod 644 "${FSTAB}.vllm-gcp.tmp"
  mv "${FSTAB}.vllm-gcp.tmp" "${FSTAB}"
  log "/etc/fstab: ${entry}"
}

wait_for_docker() {
  local tries=0
  systemctl is-active --quiet docker || systemctl start docker || die "cannot start docker (systemctl status docker)"
  until docker info >/dev/null 2>&1; do
    ((tries < 60)) || die "the Docker daemon did not become ready in 120s (systemctl status docker)"
    sleep 2
    tries=$((tries + 1))
  done
  log "Docker daemon ready"
}

fetch_access_token() {
  # The VM service account's OAuth token; it never leaves the secrets dir on tmpfs.
  if ! curl --fail --silent --show-error --retry 10 --retry-connrefused --retry-delay 1 --max-time 10 \
    -H 'Metadata-Flavor: Google' \
    -o "${TOKEN_FILE}" \
    "${METADATA_URL}/computeMetadata/v1/instance/service-accounts/default/token"; then
    die "cannot get an access token from the metadata server: the instance needs a service account with the cloud-platform scope"
  fi
  python3 -c "${PY_AUTH_HEADER}" <"${TOKEN_FILE}" >"${AUTH_HEADER_FILE}"
}

append_secret_to_env_file() {
  local env_name="$1" resource="$2" response="${SECRETS_DIR}/response.json"
  if ! curl --fail --silent --show-error --retry 5 --retry-connrefused --retry-delay 1 --max-time 30 \
    -H @"${AUTH_HEADER_FILE}" \
    -o "${response}" \
    "${SECRET_MANAGER_URL}/v1/${resource}:access"; then
    die "cannot read ${resource} from Secret Manager: the VM service account needs roles/secretmanager.secretAccessor on that secret"
  fi
  python3 -c "${PY_SECRET_TO_ENV_LINE}" "${env_name}" "${resource}" <"${response}" >>"${SECRETS_DIR}/vllm.env" \
    || die "secret ${resource} has an unusable payload (see the line above)"
  rm -f "${response}"
  log "${env_name} read from ${resource}"
}

write_env_file() {
  # Built in the transient dir, then renamed into place (same tmpfs): the container never sources half a file.
  : >"${SECRETS_DIR}/vllm.env"
  chmod 600 "${SECRETS_DIR}/vllm.env"
  append_secret_to_env_file VLLM_API_KEY "${API_KEY_SECRET_VERSION}"
  if [[ -n "${HF_TOKEN_SECRET_VERSION}" ]]; then
    append_secret_to_env_file HF_TOKEN "${HF_TOKEN_SECRET_VERSION}"
  fi
  mv "${SECRETS_DIR}/vllm.env" "${ENV_FILE}"
  log "secrets written to ${ENV_FILE} (tmpfs, mode 600)"
}

pull_image() {
  local attempt
  # Credentials go to a Docker config dir on tmpfs, so the short-lived token never lands on disk.
  python3 -c "${PY_ACCESS_TOKEN}" <"${TOKEN_FILE}" \
    | DOCKER_CONFIG="${SECRETS_DIR}/docker" docker login --username oauth2accesstoken --password-stdin "https://${REGISTRY_HOST}" >/dev/null \
    || die "docker login to ${REGISTRY_HOST} with the VM service account token failed"
  for attempt in 1 2 3; do
    if DOCKER_CONFIG="${SECRETS_DIR}/docker" docker pull --quiet "${VLLM_IMAGE}" >/dev/null; then
      log "pulled ${VLLM_IMAGE}"
      return 0
    fi
    log "pull attempt ${attempt} failed"
    sleep $((attempt * 5))
  done
  die "cannot pull ${VLLM_IMAGE}: the VM service account needs roles/artifactregistry.reader on the repository"
}

cache_mount_is_on_the_disk() {
  # True when the running container's cache bind mount is on the filesystem mounted at MOUNT_POINT. Docker
  # resolves a bind mount when it starts a container: one started before the disk was mounted holds the
  # empty boot-disk directory underneath, whatever the host mounts there later.
  local pid="$1" disk_dev dev mount_point
  disk_dev="$(mountpoint -d "${MOUNT_POINT}")" || return 1
  [[ -r "${PROC_DIR}/${pid}/mountinfo" ]] || return 1
  # mountinfo fields: id, parent id, major:minor of the filesystem, root within it, mount point, ...
  while read -r _ _ dev _ mount_point _; do
    if [[ "${mount_point}" == "${HF_CACHE_IN_CONTAINER}" ]]; then
      [[ "${dev}" == "${disk_dev}" ]]
      return
    fi
  done <"${PROC_DIR}/${pid}/mountinfo"
  return 1
}

run_container() {
  local create_args command_args config_hash current_hash="" state running restarting pid
  create_args=(
    --detach
    --name "${CONTAINER_NAME}"
    --restart unless-stopped
    --gpus all
    --ipc=host
    -p "${SERVE_PORT}:${SERVE_PORT}"
    -e "VLLM_HTTP_TIMEOUT_KEEP_ALIVE=${KEEP_ALIVE_SECONDS}"
    -v "${MOUNT_POINT}/huggingface:${HF_CACHE_IN_CONTAINER}"
    -v "${VLLM_SECRETS_DIR}:${VLLM_SECRETS_DIR_IN_CONTAINER}:ro"
    --entrypoint /bin/sh
    --log-opt max-size=100m
    --log-opt max-file=5
  )
  command_args=(-c "${ENTRYPOINT_SCRIPT}" vllm-serve "${VLLM_ARGS[@]}")
  # The label identifies this exact configuration (names of the secrets included, never their values), so a
  # rerun keeps a matching container and replaces one from another configuration.
  config_hash="$(printf '%s\0' "${create_args[@]}" "${VLLM_IMAGE}" "${command_args[@]}" \
    "${API_KEY_SECRET_VERSION}" "${HF_TOKEN_SECRET_VERSION}" | sha256sum | cut -d' ' -f1)"
  # Every boot: /run is empty after a reboot, and the container cannot start without this file.
  fetch_access_token
  write_env_file
  current_hash="$(docker inspect --format "{{ index .Config.Labels \"${CONFIG_LABEL}\" }}" "${CONTAINER_NAME}" 2>/dev/null || true)"
  if [[ -n "${current_hash}" && "${current_hash}" == "${config_hash}" ]]; then
    state="$(docker inspect --format '{{ .State.Running }} {{ .State.Restarting }} {{ .State.Pid }}' "${CONTAINER_NAME}")" \
      || state="false false 0"
    read -r running restarting pid <<<"${state}"
    if [[ "${running}" == true && "${restarting}" == false ]] && cache_mount_is_on_the_disk "${pid}"; then
      log "container ${CONTAINER_NAME} already has this configuration and its cache is on ${MOUNT_POINT}: kept running"
      return 0
    fi
    if [[ "${running}" == true && "${restarting}" == false ]]; then
      log "container ${CONTAINER_NAME} was started before ${MOUNT_POINT} was mounted (its cache is on the boot disk): restarting it"
    else
      log "container ${CONTAINER_NAME} already has this configuration (running=${running} restarting=${restarting}): restarting it now that its secrets are written"
    fi
    docker restart "${CONTAINER_NAME}" >/dev/null
    log "container ${CONTAINER_NAME} restarted"
    return 0
  fi
  if docker inspect --format '{{ .Id }}' "${CONTAINER_NAME}" >/dev/null 2>&1; then
    log "container ${CONTAINER_NAME} has another configuration: replacing it"
    docker rm --force "${CONTAINER_NAME}" >/dev/null
  fi
  pull_image
  log "docker run $(printf '%q ' "${create_args[@]}" --label "${CONFIG_LABEL}=${config_hash}" "${VLLM_IMAGE}" "${command_args[@]}")"
  docker run "${create_args[@]}" --label "${CONFIG_LABEL}=${config_hash}" "${VLLM_IMAGE}" "${command_args[@]}" >/dev/null
  log "container ${CONTAINER_NAME} started; vLLM loads the model now (GET /health on port ${SERVE_PORT} turns 200 when ready)"
}

configure_ops_agent() {
  local config="${OPS_AGENT_DIR}/config.yaml" installer="${STATE_DIR}/add-google-cloud-ops-agent-repo.sh"
  if ! systemctl cat google-cloud-ops-agent.service >/dev/null 2>&1; then
    log "Ops Agent not installed: installing it"
    curl --fail --silent --show-error --location --retry 5 --retry-connrefused --max-time 120 \
      -o "${installer}" "${OPS_AGENT_INSTALLER_URL}" \
      || die "cannot download the Ops Agent installer (Cloud NAT egress needed); vLLM runs, but no metrics reach Managed Prometheus"
    bash "${installer}" --also-install \
      || die "the Ops Agent install failed; vLLM runs, but no metrics reach Managed Prometheus"
  fi
  mkdir -p "${OPS_AGENT_DIR}"
  if [[ -f "${config}" ]] && [[ "$(cat "${config}")" == "${OPS_AGENT_CONFIG}" ]]; then
    log "Ops Agent config unchanged"
    systemctl is-active --quiet google-cloud-ops-agent || systemctl restart google-cloud-ops-agent
  else
    printf '%s\n' "${OPS_AGENT_CONFIG}" >"${config}.tmp"
    chmod 644 "${config}.tmp"
    mv "${config}.tmp" "${config}"
    systemctl restart google-cloud-ops-agent
    log "Ops Agent configured: Prometheus receiver scrapes localhost:${SERVE_PORT}/metrics"
  fi
}

main() {
  local started=${SECONDS}
  begin_phase preflight
  check_test_hooks
  preflight
  begin_phase driver
  check_nvidia_driver
  begin_phase disk
  mount_model_cache
  begin_phase docker
  wait_for_docker
  begin_phase container
  run_container
  begin_phase ops-agent
  configure_ops_agent
  PHASE="done"
  log "boot finished in $((SECONDS - started))s"
}

main "$@"
