#!/usr/bin/env bash
# Offline checks of the Helm chart (deploy/helm/imagesearch), what `make helm-check` and CI run:
#   1. `helm lint` (default values and the GPU values),
#   2. `helm template` with the default and the GPU values,
#   3. strict schema validation of every rendered manifest against the Kubernetes API types
#      (kubernetes-validate, pinned in the dev extras; it bundles the schemas: nothing is downloaded;
#      --strict rejects unknown fields).
# Helm is the pinned build from scripts/install_tools.sh. Rendered manifests land in $OUT_DIR
# (default .data/helm) for inspection.
set -euo pipefail
cd "$(dirname "$0")/.."

CHART=deploy/helm/imagesearch
KUBE_VERSION="${KUBE_VERSION:-1.33.0}"   # the oldest minor the chart is validated against
OUT_DIR="${OUT_DIR:-.data/helm}"
VPY="${VPY:-.venv/bin/python}"

scripts/install_tools.sh helm
HELM="$(scripts/install_tools.sh --print-bin)/helm"
mkdir -p "$OUT_DIR"

for variant in default gpu; do
  args=()
  [[ $variant == gpu ]] && args=(-f "$CHART/values-gpu.yaml")
  echo "[check_helm] $variant: helm lint"
  "$HELM" lint --strict --kube-version "$KUBE_VERSION" "$CHART" "${args[@]}"
  echo "[check_helm] $variant: helm template"
  "$HELM" template imagesearch "$CHART" --kube-version "$KUBE_VERSION" "${args[@]}" >"$OUT_DIR/$variant.yaml"
  echo "[check_helm] $variant: kubernetes-validate --strict (Kubernetes $KUBE_VERSION)"
  "$VPY" -m kubernetes_validate --strict --quiet -k "$KUBE_VERSION" "$OUT_DIR/$variant.yaml"
done
echo "[check_helm] ok: $OUT_DIR/default.yaml, $OUT_DIR/gpu.yaml"
