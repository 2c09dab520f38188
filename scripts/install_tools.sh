#!/usr/bin/env bash
# Pinned installs of the code generators and load-test tool used by the client examples and bench/ghz,
# into one cache bin dir shared by every clone on the machine (default ~/.cache/imagesearch/bin).
#
#   scripts/install_tools.sh                  # everything below
#   scripts/install_tools.sh ghz protoc-gen-go
#   scripts/install_tools.sh --print-bin      # print the bin dir (for PATH=...)
#
# Idempotent: a tool whose installed build already has the pinned version is skipped (Go binaries are
# checked with `go version -m`, Maven artifacts are stored under versioned names behind a symlink), so a
# warm run costs well under a second. Only ordinary clients touch the registries: `go install`
# (Go module proxy) and `mvn dependency:copy` (Maven Central).
#
# Tools:
#   protoc-gen-go, protoc-gen-go-grpc   Go codegen plugins for `buf generate`           (needs go)
#   ghz                                 gRPC load generator for bench/ghz               (needs go)
#   promtool                            Prometheus rule/config checker for deploy/prometheus
#                                       (`make monitoring-check`)                       (needs go)
#   helm                                Helm 4, lints/renders deploy/helm (check_helm.sh) (needs go)
#   protoc, protoc-gen-grpc-java        Java codegen for `buf generate` (protoc's built-in java
#                                       generator + grpc-java's plugin), Maven Central exe artifacts
#                                                                                        (needs mvn)
# protoc-gen-es (TypeScript) is not here: it is an npm devDependency of clients/ts, pinned by its lockfile.
set -euo pipefail

# --- pins (bump deliberately; gen/ output changes with the generator versions) --------------------------
PROTOC_GEN_GO_VERSION=v1.36.12        # google.golang.org/protobuf
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2     # google.golang.org/grpc/cmd/protoc-gen-go-grpc
GHZ_VERSION=v0.121.0                  # github.com/bojand/ghz
PROMTOOL_VERSION=v0.316.0             # github.com/prometheus/prometheus (module v0.3NN.x = Prometheus 3.NN.x)
HELM_VERSION=v4.3.2                   # helm.sh/helm/v4 (scripts/check_helm.sh)
PROTOC_VERSION=4.36.2                 # com.google.protobuf:protoc (Maven numbering; = protobuf-java runtime)
GRPC_JAVA_VERSION=1.83.1              # io.grpc:protoc-gen-grpc-java (= grpc-java runtime in clients/java;
                                      # 1.84+ publish no linux exe on Maven Central)
MAVEN_DEPENDENCY_PLUGIN=3.8.1         # org.apache.maven.plugins:maven-dependency-plugin

CACHE_DIR="${IMAGESEARCH_CACHE_DIR:-$HOME/.cache/imagesearch}"
BIN="${IMAGESEARCH_TOOLS_BIN:-$CACHE_DIR/bin}"
ALL_TOOLS=(protoc-gen-go protoc-gen-go-grpc ghz promtool helm protoc protoc-gen-grpc-java)

say() { printf '[install_tools] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

if [[ "${1:-}" == "--print-bin" ]]; then
  echo "$BIN"
  exit 0
fi
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi

mkdir -p "$BIN"
tools=("$@")
[[ ${#tools[@]} -gt 0 ]] || tools=("${ALL_TOOLS[@]}")

# go_tool NAME PACKAGE MODULE VERSION: `go install PACKAGE@VERSION` into $BIN unless that build is there.
go_tool() {
  local name=$1 pkg=$2 module=$3 version=$4
  command -v go >/dev/null || die "$name needs Go (go install); Go 1.23+ is expected on PATH"
  if [[ -x "$BIN/$name" ]] && go version -m "$BIN/$name" 2>/dev/null \
      | awk -v m="$module" -v v="$version" '$1 == "mod" && $2 == m && $3 == v {found=1} END {exit !found}'; then
    say "$name $version present"
    return
  fi
  say "go install $pkg@$version"
  local t0=$SECONDS
  # CGO off: static binaries that do not depend on the host's C toolchain.
  GOBIN="$BIN" CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath" go install "$pkg@$version"
  say "$name $version installed in $((SECONDS - t0))s"
}

# maven_exe NAME GROUP:ARTIFACT VERSION: fetch the platform's exe artifact from Maven Central into
# $BIN/NAME-VERSION and point $BIN/NAME at it.
maven_exe() {
  local name=$1 ga=$2 version=$3
  local target="$BIN/$name-$version"
  if [[ -x "$target" && "$(readlink "$BIN/$name" 2>/dev/null)" == "$name-$version" ]]; then
    say "$name $version present"
    return
  fi
  command -v mvn >/dev/null || die "$name comes from Maven Central: needs mvn (Maven 3.8+) on PATH"
  local os arch
  case "$(uname -s)" in
    Linux) os=linux ;;
    Darwin) os=osx ;;
    *) die "no $name build for $(uname -s)" ;;
  esac
  case "$(uname -m)" in
    x86_64 | amd64) arch=x86_64 ;;
    aarch64 | arm64) arch=aarch_64 ;;
    *) die "no $name build for $(uname -m)" ;;
  esac
  local tmp
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" RETURN
  say "mvn dependency:copy $ga:$version:exe:$os-$arch"
  local t0=$SECONDS
  mvn -B -q -Dstyle.color=never "org.apache.maven.plugins:maven-dependency-plugin:$MAVEN_DEPENDENCY_PLUGIN:copy" \
    -Dartifact="$ga:$version:exe:$os-$arch" -DoutputDirectory="$tmp" -Dmdep.stripVersion=true \
    -Dmdep.stripClassifier=true >&2
  local got=("$tmp"/*)
  [[ -f "${got[0]}" ]] || die "maven returned no file for $ga:$version"
  install -m 0755 "${got[0]}" "$target"
  ln -sfn "$name-$version" "$BIN/$name"
  say "$name $version installed in $((SECONDS - t0))s"
}

for tool in "${tools[@]}"; do
  case "$tool" in
    protoc-gen-go)
      go_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/protobuf \
        "$PROTOC_GEN_GO_VERSION" ;;
    protoc-gen-go-grpc)
      go_tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc \
        google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION" ;;
    ghz)
      go_tool ghz github.com/bojand/ghz/cmd/ghz github.com/bojand/ghz "$GHZ_VERSION" ;;
    promtool)
      go_tool promtool github.com/prometheus/prometheus/cmd/promtool github.com/prometheus/prometheus \
        "$PROMTOOL_VERSION" ;;
    helm)
      go_tool helm helm.sh/helm/v4/cmd/helm helm.sh/helm/v4 "$HELM_VERSION" ;;
    protoc)
      maven_exe protoc com.google.protobuf:protoc "$PROTOC_VERSION" ;;
    protoc-gen-grpc-java)
      maven_exe protoc-gen-grpc-java io.grpc:protoc-gen-grpc-java "$GRPC_JAVA_VERSION" ;;
    *) die "unknown tool '$tool' (known: ${ALL_TOOLS[*]})" ;;
  esac
done
