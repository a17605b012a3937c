# Sourced by .ci/run: builds (or reuses, from ~/.cache/necrocode/k8s-v1.20.2) etcd +
# kube-apiserver + kube-controller-manager, starts them on 127.0.0.1, exports
# NECROCODE_K8S_KUBECONFIG (an admin kubeconfig) for the `kubernetes` tests and stops them at exit.
log "Kubernetes control plane (build once, then cached)"
command -v openssl >/dev/null 2>&1 || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
}
bash tests/k8s/build.sh
K8S_DIR=$(mktemp -d /tmp/necrocode-ci-k8s.XXXXXX)
_k8s_prev_exit=$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT\$//")
# shellcheck disable=SC2064  # expand now: the folder and the previous EXIT trap
trap "python3 tests/k8s/controlplane.py stop '$K8S_DIR' >/dev/null 2>&1 || true; rm -rf '$K8S_DIR'; $_k8s_prev_exit" EXIT
python3 tests/k8s/controlplane.py start "$K8S_DIR" >"$K8S_DIR/env"
set -a
# shellcheck disable=SC1091
. "$K8S_DIR/env"
set +a
