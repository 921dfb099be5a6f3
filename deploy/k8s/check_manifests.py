#!/usr/bin/env python3
"""Structural checks of deploy/k8s and deploy/docker-compose.yml that a
schema validator cannot do: cross-references between objects, the trust
split, pod security, and that every TANDEM_* variable is a real flag of the
program it is given to (read from the crates' clap definitions).

    python3 deploy/k8s/check_manifests.py        (needs PyYAML)

Prints one line per failed check and `N passed, N failed` at the end; exits 1
on any failure.
"""
import pathlib
import re
import sys

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent.parent
ROOT = DEPLOY.parent
K8S = DEPLOY / "k8s"

# Program -> crate whose clap Config defines its flags.
PROGRAM_CRATES = {
    "activation-server": "crates/tandem-activation-server/src/lib.rs",
    "model-server": "crates/tandem-model-server/src/lib.rs",
}
# Variables read by the image's helper scripts or by tracing, not by clap.
EXTRA_ENV = {"RUST_LOG", "TANDEM_HEALTH_PORT", "TANDEM_WAIT_SECS"}
DOMAINS = {"activation": "tandem-activation", "model": "tandem-model"}

passed = 0
failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {what}")


def env_vars_of(program):
    src = (ROOT / PROGRAM_CRATES[program]).read_text()
    return set(re.findall(r'env\s*=\s*"(TANDEM_[A-Z0-9_]+)"', src))


def load_dir(d):
    docs = []
    for f in sorted(d.glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if doc:
                docs.append((f.name, doc))
    return docs


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def all_containers(pod):
    return list(pod.get("initContainers", [])) + list(pod.get("containers", []))


def program_of(container):
    cmd = container.get("command") or container.get("args") or []
    if cmd and cmd[0] == "tandem-wait" and "--" in cmd:
        cmd = cmd[cmd.index("--") + 1:]
    return cmd[0] if cmd else None


def check_env(where, program, names):
    if program not in PROGRAM_CRATES:
        return
    known = env_vars_of(program) | EXTRA_ENV
    check(len(env_vars_of(program)) >= 10, f"{program}: could not read its clap env vars")
    for n in names:
        check(n in known, f"{where}: {n} is not a flag/env var of {program}")


# ---------------------------------------------------------------- k8s --
for domain, ns in DOMAINS.items():
    d = K8S / domain
    docs = load_dir(d)
    kust = next(doc for f, doc in docs if f == "kustomization.yaml")
    resources = set(kust["resources"])
    check(kust.get("namespace") == ns, f"{domain}: kustomization namespace {kust.get('namespace')} != {ns}")
    for r in resources:
        check((d / r).exists(), f"{domain}: kustomization lists missing {r}")
    check("secrets.template.yaml" not in resources, f"{domain}: secret templates must not be applied")

    objs = [(f, doc) for f, doc in docs if f != "kustomization.yaml"]
    by_kind = {}
    for f, o in objs:
        by_kind.setdefault(o["kind"], []).append((f, o))
        if o["kind"] != "Namespace":
            check(o["metadata"].get("namespace") == ns, f"{f}: {o['kind']}/{o['metadata']['name']} not in namespace {ns}")
    nss = [o for _, o in by_kind.get("Namespace", [])]
    check(len(nss) == 1 and nss[0]["metadata"]["name"] == ns, f"{domain}: exactly one Namespace {ns}")

    secrets = {o["metadata"]["name"]: o for _, o in by_kind.get("Secret", [])}
    deployments = {o["metadata"]["name"]: o for _, o in by_kind.get("Deployment", [])}
    check(len(deployments) == 1, f"{domain}: one Deployment per trust domain")

    for name, dep in deployments.items():
        spec = dep["spec"]
        tpl = spec["template"]
        labels = tpl["metadata"]["labels"]
        pod = tpl["spec"]
        check(matches(spec["selector"]["matchLabels"], labels), f"{name}: selector does not match the pod labels")
        programs = {program_of(c) for c in all_containers(pod)} - {None, "install"}
        # Trust split: never both servers in one pod / one namespace.
        check(len(programs & set(PROGRAM_CRATES)) == 1, f"{name}: runs {programs}; exactly one tandem server per pod")
        check(f"{domain}-server" in programs, f"{name}: the {domain} namespace must run {domain}-server, runs {programs}")
        # Pod security (restricted profile basics).
        psc = pod.get("securityContext", {})
        check(psc.get("runAsNonRoot") is True, f"{name}: runAsNonRoot")
        check(psc.get("runAsUser") == 10001, f"{name}: runAsUser 10001 (the image's user)")
        check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{name}: seccomp RuntimeDefault")
        check(pod.get("automountServiceAccountToken") is False, f"{name}: no service account token")
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        for c in all_containers(pod):
            sc = c.get("securityContext", {})
            check(sc.get("allowPrivilegeEscalation") is False, f"{name}/{c['name']}: allowPrivilegeEscalation false")
            check(sc.get("readOnlyRootFilesystem") is True, f"{name}/{c['name']}: readOnlyRootFilesystem")
            check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{name}/{c['name']}: drop ALL capabilities")
            check("limits" in c.get("resources", {}) and "requests" in c.get("resources", {}),
                  f"{name}/{c['name']}: resource requests and limits")
            for m in c.get("volumeMounts", []):
                check(m["name"] in vols, f"{name}/{c['name']}: mounts unknown volume {m['name']}")
        # Secret volumes -> Secret templates (and the keys they project).
        mounts = {}
        for c in all_containers(pod):
            for m in c.get("volumeMounts", []):
                mounts.setdefault(m["name"], set()).add(m["mountPath"])
        secret_files = {}
        for v in vols.values():
            if "secret" in v:
                sname = v["secret"]["secretName"]
                check(sname in secrets, f"{name}: Secret {sname} has no template in {domain}/secrets.template.yaml")
                keys = set((secrets.get(sname, {}).get("stringData") or {}).keys())
                for item in v["secret"].get("items", []):
                    check(item["key"] in keys, f"{name}: Secret {sname} has no key {item['key']}")
                for mp in mounts.get(v["name"], []):
                    for k in keys:
                        secret_files[f"{mp}/{k}"] = sname
        for c in pod["containers"]:
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            prog = program_of(c)
            check_env(f"{name}/{c['name']}", prog, env)
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            listen = env.get("TANDEM_LISTEN", "")
            check(listen.startswith("0.0.0.0:") or listen.startswith("[::]:"), f"{name}: TANDEM_LISTEN must be a wildcard address, is {listen!r}")
            check(int(listen.rsplit(":", 1)[1]) in ports.values(), f"{name}: TANDEM_LISTEN port not a containerPort")
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                p = c.get(probe)
                check(p is not None, f"{name}: {probe}")
                if p and "tcpSocket" in p:
                    port = p["tcpSocket"]["port"]
                    check(port in ports or port in ports.values(), f"{name}: {probe} port {port} not declared")
            for var in ("TANDEM_TLS_CERT", "TANDEM_TLS_KEY", "TANDEM_TLS_CA"):
                check(env.get(var) in secret_files, f"{name}: {var}={env.get(var)} is not a file of a mounted Secret")
            if prog == "activation-server":
                kf = env.get("TANDEM_KEY_FILE", "")
                init_targets = [a for ic in pod.get("initContainers", []) for a in ic.get("command", [])]
                check(kf in init_targets, f"{name}: TANDEM_KEY_FILE {kf} is not installed by the init container")
            if prog == "model-server":
                url = env.get("TANDEM_ACTIVATION_SERVER", "")
                check(url.startswith("https://activation-server.tandem-activation.svc"),
                      f"{name}: activation server URL {url} (mutual TLS to the other namespace's Service)")

        # Services, HPA, PDB, NetworkPolicy point at this Deployment.
        cports = {p["name"]: p["containerPort"] for c in pod["containers"] for p in c.get("ports", [])}
        svcs = [o for _, o in by_kind.get("Service", [])]
        check(any(s["spec"].get("clusterIP") == "None" for s in svcs), f"{domain}: a headless Service")
        for s in svcs:
            check(matches(s["spec"]["selector"], labels), f"Service {s['metadata']['name']}: selector matches no pod")
            for p in s["spec"]["ports"]:
                check(p["targetPort"] in cports or p["targetPort"] in cports.values(),
                      f"Service {s['metadata']['name']}: targetPort {p['targetPort']} not a container port")
        for _, h in by_kind.get("HorizontalPodAutoscaler", []):
            ref = h["spec"]["scaleTargetRef"]
            check(ref["kind"] == "Deployment" and ref["name"] in deployments, f"HPA {h['metadata']['name']}: target")
            check(1 <= h["spec"]["minReplicas"] <= h["spec"]["maxReplicas"], f"HPA {h['metadata']['name']}: replicas")
            cpu_metric = any(m.get("resource", {}).get("name") == "cpu" for m in h["spec"]["metrics"])
            check(all("cpu" in c.get("resources", {}).get("requests", {}) for c in pod["containers"]) or not cpu_metric,
                  f"HPA {h['metadata']['name']}: CPU utilization needs CPU requests")
        check(len(by_kind.get("HorizontalPodAutoscaler", [])) == 1, f"{domain}: one HPA")
        for _, p in by_kind.get("PodDisruptionBudget", []):
            check(matches(p["spec"]["selector"]["matchLabels"], labels), f"PDB {p['metadata']['name']}: selector")
        for _, np in by_kind.get("NetworkPolicy", []):
            check(matches(np["spec"]["podSelector"]["matchLabels"], labels), f"NetworkPolicy {np['metadata']['name']}: podSelector")
            for rule in np["spec"].get("ingress", []) + np["spec"].get("egress", []):
                for peer in rule.get("from", []) + rule.get("to", []):
                    nsl = peer.get("namespaceSelector", {}).get("matchLabels", {})
                    other = nsl.get("kubernetes.io/metadata.name")
                    check(other in set(DOMAINS.values()) | {"kube-system"}, f"NetworkPolicy {np['metadata']['name']}: peer namespace {other}")

# The activation server admits only model-server pods of tandem-model.
act_np = [o for _, o in load_dir(K8S / "activation") if o["kind"] == "NetworkPolicy"][0]
peers = [p for r in act_np["spec"]["ingress"] for p in r.get("from", [])]
check(peers and all(p.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == "tandem-model"
                    and p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "model-server"
                    for p in peers), "activation NetworkPolicy admits only tandem-model/model-server")
check(act_np["spec"].get("egress") == [] and "Egress" in act_np["spec"]["policyTypes"], "activation server has no egress")

# ------------------------------------------------------------ compose --
compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
services = compose["services"]
for name in ("certs", "activation-server", "model-server"):
    check(name in services, f"compose: service {name}")
for name, s in services.items():
    prog = program_of(s)
    check_env(f"compose/{name}", prog, (s.get("environment") or {}).keys())
    if prog in PROGRAM_CRATES:
        check(s.get("restart") == "unless-stopped", f"compose/{name}: restart policy")
        check("healthcheck" in s, f"compose/{name}: healthcheck")
        lim = s.get("deploy", {}).get("resources", {}).get("limits", {})
        check("cpus" in lim and "memory" in lim, f"compose/{name}: cpu and memory limits")
        deps = s.get("depends_on", {})
        check(deps.get("certs", {}).get("condition") == "service_completed_successfully", f"compose/{name}: waits for certs")
        check(s.get("read_only") is True, f"compose/{name}: read-only root filesystem")
act = services["activation-server"]
check(act["networks"] == ["backend"], "compose: the activation server is on the private network only")
check(not act.get("ports"), "compose: the activation server publishes no port")
check(compose["networks"]["backend"].get("internal") is True, "compose: the private network is internal")
check(services["model-server"]["depends_on"]["activation-server"]["condition"] == "service_healthy",
      "compose: the model server waits for a healthy activation server")
check(any(v.startswith("activation-key:") for v in act["volumes"]), "compose: the key is on a named volume")
check(any(v.endswith(":/srv/models:ro") for v in services["model-server"]["volumes"]), "compose: models mounted read-only")

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
