"""
Static checks of the deployment files: docker-compose.yml, deploy/ (image
and Kubernetes manifests) and examples/.  Nothing here starts a container;
the point is that the files agree with each other and with the worker: the
variables set are ones the worker documents, the probes hit the endpoints it
serves, the examples are the ones examples/README.md describes.

Run with Debian's interpreter, which has python3-yaml:
    /usr/bin/python3 -m pytest tests/integration/test_compose.py
"""
import ctypes
import ctypes.util
import json
import os
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(os.environ.get("MW_SOURCE_DIR")
            or Path(__file__).resolve().parents[2])
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
K8S = ROOT / "deploy" / "k8s"
EXAMPLES = ROOT / "examples"

HTTP_PORT = 9464
REQUESTS_PARTITIONS = 12
VAR_RE = re.compile(r"MESH_WORKER_[A-Z0-9_]+")
PASSTHROUGH = "MESH_WORKER_KAFKA_"
REQUEST_SIDE_CODES = [
    "INVALID_FIELD",
    "REQUIRED_FIELD_MISSING",
    "DELIVERY_DESTINATION_REQUIRED",
    "SERVICE_NOT_SUPPORTED_ON_PLATFORM",
    "MONITOR_MODE_NOT_SUPPORTED",
    "NFR_DOMAIN_NOT_MSP_DOMAIN",
    "NFR_LICENSE_LIMIT_EXCEEDED",
    "DOMAIN_ALREADY_PROVISIONED",
    "REQUEST_ID_CONFLICT",
]


# ---------------------------------------------------------------- helpers

def load_compose():
    with open(COMPOSE, encoding="utf-8") as f:
        return yaml.safe_load(f)


def environment(service):
    """A service's environment as a dict, from either compose syntax."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = [item.split("=", 1) for item in env]
        return {p[0]: (p[1] if len(p) > 1 else None) for p in pairs}
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def k8s_documents():
    """Every document of every deploy/k8s/*.yaml, with its file name."""
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        with open(path, encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if doc is not None:
                    docs.append((path.name, doc))
    return docs


def k8s_kind(kind):
    found = [doc for _, doc in k8s_documents() if doc.get("kind") == kind]
    assert len(found) == 1, \
        f"expected one {kind} in deploy/k8s, found {len(found)}"
    return found[0]


def documented_variables():
    """
    The MESH_WORKER_* names the worker documents: those in a Markdown
    table of README.md when there is one, else those in worker/config.c.
    Returns (names, source, source text).
    """
    readme = ROOT / "README.md"
    if readme.exists():
        text = readme.read_text(encoding="utf-8")
        names = set()
        for line in text.splitlines():
            if line.lstrip().startswith("|"):
                names.update(VAR_RE.findall(line))
        names = {n for n in names if not n.endswith("_")}
        if names:
            return names, "the configuration table of README.md", text
    config = ROOT / "worker" / "config.c"
    assert config.exists(), \
        "neither README.md has a configuration table nor worker/config.c " \
        "exists: nothing documents the MESH_WORKER_* variables"
    text = config.read_text(encoding="utf-8")
    names = {n for n in VAR_RE.findall(text) if not n.endswith("_")}
    assert names, "worker/config.c names no MESH_WORKER_* variable"
    return names, "worker/config.c", text


def undocumented(variables):
    """The variables of the given iterable that the worker does not read."""
    names, _, text = documented_variables()
    reads_files = "_FILE" in text
    bad = []
    for var in sorted(set(variables)):
        if var.startswith(PASSTHROUGH) or var in names:
            continue
        if reads_files and var.endswith("_FILE") and var[:-5] in names:
            continue
        bad.append(var)
    return bad


def librdkafka():
    path = ctypes.util.find_library("rdkafka") or "librdkafka.so.1"
    lib = ctypes.CDLL(path)
    lib.rd_kafka_conf_new.restype = ctypes.c_void_p
    lib.rd_kafka_conf_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                      ctypes.c_char_p, ctypes.c_char_p,
                                      ctypes.c_size_t]
    lib.rd_kafka_conf_destroy.argtypes = [ctypes.c_void_p]
    return lib


def passthrough_errors(env):
    """
    Sets every MESH_WORKER_KAFKA_<PROPERTY> of env on a librdkafka
    configuration, mapped as the worker maps it (lower case, '_' read as
    '.'), and returns librdkafka's complaints.
    """
    lib = librdkafka()
    conf = lib.rd_kafka_conf_new()
    errors = []
    try:
        for var, value in sorted(env.items()):
            if not var.startswith(PASSTHROUGH):
                continue
            prop = var[len(PASSTHROUGH):].lower().replace("_", ".")
            errstr = ctypes.create_string_buffer(512)
            rc = lib.rd_kafka_conf_set(conf, prop.encode(),
                                       str(value).encode(), errstr, 512)
            if rc != 0:
                errors.append(f"{var} -> {prop}={value!r}: "
                              f"{errstr.value.decode()}")
    finally:
        lib.rd_kafka_conf_destroy(conf)
    return errors


def duration_seconds(text):
    m = re.fullmatch(r"(\d+)([smhd])", text)
    assert m, f"not a duration: {text!r}"
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600,
                              "d": 86400}[m.group(2)]


def examples():
    """(file name, parsed object) for every examples/*.json, sorted."""
    out = []
    for path in sorted(EXAMPLES.glob("*.json")):
        with open(path, encoding="utf-8") as f:
            out.append((path.name, json.load(f)))
    return out


def is_rejected(name):
    return "rejected" in name


def creations():
    """The examples that ask for a new customer (no "type", or
    CustomerRequested)."""
    return [(n, o) for n, o in examples()
            if o.get("type", "CustomerRequested") == "CustomerRequested"]


# ---------------------------------------------------------------- compose

def test_compose_has_the_whole_stack():
    services = load_compose()["services"]
    for name in ("kafka", "schema-registry", "postgres", "worker"):
        assert name in services, f"service {name} missing; have {sorted(services)}"
    producers = [n for n in services if "producer" in n]
    assert producers, f"no producer service; have {sorted(services)}"


def test_compose_has_no_version_key():
    assert "version" not in load_compose()


def test_kafka_is_single_node_kraft():
    kafka = load_compose()["services"]["kafka"]
    assert kafka["image"] == "apache/kafka:3.9.0"
    env = environment(kafka)
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == \
        f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert "healthcheck" in kafka


def test_topics_are_created_with_their_partition_counts():
    services = load_compose()["services"]
    init = [s for n, s in services.items() if n != "kafka"
            and "kafka-topics.sh" in json.dumps(s.get("command", ""))]
    assert len(init) == 1, "expected one service running kafka-topics.sh"
    script = json.dumps(init[0]["command"])
    for topic, partitions in (("customer.requests", REQUESTS_PARTITIONS),
                              ("customer.events", 12),
                              ("customer.requests.dlq", 1)):
        assert f"{topic}:{partitions}" in script, \
            f"{topic} with {partitions} partitions not in {script}"


def test_worker_builds_from_deploy_dockerfile():
    worker = load_compose()["services"]["worker"]
    build = worker["build"]
    assert build["dockerfile"] == "deploy/Dockerfile"
    assert (COMPOSE.parent / build["context"]).resolve() == ROOT.resolve()
    assert DOCKERFILE.exists()


def test_worker_runs_two_replicas():
    assert load_compose()["services"]["worker"]["deploy"]["replicas"] == 2


def test_worker_has_the_variables_it_needs():
    env = environment(load_compose()["services"]["worker"])
    for var in ("MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS",
                "MESH_WORKER_SCHEMA_REGISTRY_URL", "MESH_WORKER_HTTP_ADDR"):
        assert env.get(var), f"{var} not set for worker; have {sorted(env)}"
    assert env.get("MESH_WORKER_DATABASE_URL") \
        or env.get("MESH_WORKER_DATABASE_URL_FILE"), \
        "neither MESH_WORKER_DATABASE_URL nor _FILE set for worker"
    assert env["MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["MESH_WORKER_SCHEMA_REGISTRY_URL"] == \
        "http://schema-registry:8081"
    assert env["MESH_WORKER_HTTP_ADDR"].endswith(f":{HTTP_PORT}")


def test_database_url_secret_points_at_the_postgres_service():
    compose = load_compose()
    worker = compose["services"]["worker"]
    path = environment(worker).get("MESH_WORKER_DATABASE_URL_FILE")
    if path is None:
        url = environment(worker)["MESH_WORKER_DATABASE_URL"]
    else:
        assert path.startswith("/run/secrets/"), path
        name = path[len("/run/secrets/"):]
        assert name in worker.get("secrets", []), \
            f"worker does not mount secret {name}"
        url = (ROOT / compose["secrets"][name]["file"]).read_text()
        postgres = compose["services"]["postgres"]
        pw_file = environment(postgres)["POSTGRES_PASSWORD_FILE"]
        pw_name = pw_file[len("/run/secrets/"):]
        password = (ROOT / compose["secrets"][pw_name]["file"]).read_text()
        assert f":{password.strip()}@" in url, \
            "the database URL and PostgreSQL's password file disagree"
    assert re.fullmatch(r"postgres(ql)?://mesh:[^@]+@postgres:5432/mesh\S*",
                        url.strip()), url


def test_every_variable_in_compose_is_documented():
    names = []
    for service in load_compose()["services"].values():
        names += [v for v in environment(service) if v.startswith("MESH_WORKER_")]
    assert names
    _, source, _ = documented_variables()
    bad = undocumented(names)
    assert not bad, f"not in {source}: {bad}"


def test_kafka_passthrough_variables_are_librdkafka_properties():
    for name, service in load_compose()["services"].items():
        errors = passthrough_errors(environment(service))
        assert not errors, f"service {name}: {errors}"


def test_worker_waits_for_its_dependencies():
    depends = load_compose()["services"]["worker"]["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["schema-registry"]["condition"] == "service_healthy"
    kafka = [depends[n]["condition"] for n in depends if n.startswith("kafka")]
    assert kafka and all(c in ("service_healthy",
                               "service_completed_successfully")
                         for c in kafka), depends


def test_postgres_keeps_its_data_and_reports_health():
    postgres = load_compose()["services"]["postgres"]
    assert postgres["image"].startswith("postgres:15")
    assert any(str(v).endswith(":/var/lib/postgresql/data")
               for v in postgres["volumes"])
    assert "healthcheck" in postgres


def test_producer_sends_the_examples():
    services = load_compose()["services"]
    producer = next(s for n, s in services.items() if "producer" in n)
    command = " ".join(producer.get("entrypoint", []) + producer["command"])
    assert re.search(r"mesh-worker produce \S*examples/\*\.json", command), \
        command
    mounts = [v for v in producer["volumes"] if "examples" in str(v)]
    assert mounts and all(str(m).endswith(":ro") for m in mounts), mounts
    env = environment(producer)
    assert env.get("MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS") == "kafka:9092"
    assert env.get("MESH_WORKER_TOPIC_REQUESTS", "customer.requests") == \
        environment(services["worker"]).get("MESH_WORKER_TOPIC_REQUESTS",
                                            "customer.requests")


def test_worker_is_stopped_after_its_shutdown_timeout():
    worker = load_compose()["services"]["worker"]
    timeout = environment(worker).get("MESH_WORKER_SHUTDOWN_TIMEOUT", "10s")
    grace = worker.get("stop_grace_period", "10s")
    assert duration_seconds(grace) > duration_seconds(timeout), \
        f"stop_grace_period {grace} must exceed the shutdown timeout {timeout}"


# ---------------------------------------------------------------- image

def dockerfile_stages():
    stages = []
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if re.match(r"FROM\s", line, re.I):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return ["\n".join(s) for s in stages]


def test_image_builds_tests_and_runs_as_a_user():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "deploy/Dockerfile should be multi-stage"
    build, runtime = stages[0], stages[-1]
    assert "debian:12-slim" in build and "debian:12-slim" in runtime
    assert "CMAKE_BUILD_TYPE=Release" in build
    assert re.search(r"ctest .*-L unit", build)
    assert not re.search(r"lib[a-z0-9-]*-dev\b", runtime), \
        "runtime stage installs -dev packages"
    for pkg in ("librdkafka1", "libavro23", "libpq5", "libcurl4",
                "libjansson4", "libmicrohttpd12", "ca-certificates"):
        assert pkg in runtime, f"runtime stage lacks {pkg}"
    user = re.findall(r"^USER\s+(\S+)", runtime, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert re.search(r'^ENTRYPOINT \["mesh-worker"\]', runtime, re.M)
    assert re.search(r'^CMD \["run"\]', runtime, re.M)
    assert re.search(rf"^EXPOSE {HTTP_PORT}\b", runtime, re.M)


def test_image_healthcheck_has_its_client():
    runtime = dockerfile_stages()[-1]
    check = re.search(r"^HEALTHCHECK\s+((?:[^\n]*\\\n)*[^\n]*)", runtime, re.M)
    if check is None:
        return
    if "NONE" in check.group(1).split():
        return
    assert "curl" in check.group(1), "HEALTHCHECK without a known client"
    assert re.search(r"apt-get install[^\n]*(\\\n[^\n]*)*\bcurl\b", runtime), \
        "HEALTHCHECK uses curl but the runtime stage does not install it"
    assert "/healthz" in check.group(1)


# ---------------------------------------------------------------- k8s

def test_k8s_manifests_parse_and_are_namespace_free():
    docs = k8s_documents()
    kinds = {doc["kind"] for _, doc in docs}
    for kind in ("Deployment", "ConfigMap", "Secret", "Service",
                 "ScaledObject"):
        assert kind in kinds, f"no {kind} in deploy/k8s; have {sorted(kinds)}"
    for name, doc in docs:
        assert doc.get("apiVersion"), f"{name}: no apiVersion"
        if doc["kind"] != "Kustomization":
            assert doc["metadata"].get("name"), f"{name}: no metadata.name"
            assert "namespace" not in doc["metadata"], \
                f"{name}: manifests are namespace-free"


def deployment_container():
    deployment = k8s_kind("Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return deployment, containers[0]


def probe_port(container, probe):
    port = probe["httpGet"]["port"]
    if isinstance(port, str):
        port = next(p["containerPort"] for p in container["ports"]
                    if p.get("name") == port)
    return port


def test_deployment_probes_use_healthz_and_readyz():
    _, container = deployment_container()
    live = container["livenessProbe"]
    ready = container["readinessProbe"]
    assert live["httpGet"]["path"] == "/healthz"
    assert ready["httpGet"]["path"] == "/readyz"
    assert probe_port(container, live) == HTTP_PORT
    assert probe_port(container, ready) == HTTP_PORT


def test_deployment_is_locked_down_and_bounded():
    deployment, container = deployment_container()
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"]["memory"] == "128Mi"
    assert container["resources"]["limits"]["memory"] == "128Mi"
    refs = {(k, v["name"]) for e in container["envFrom"] for k, v in e.items()}
    assert ("configMapRef", k8s_kind("ConfigMap")["metadata"]["name"]) in refs
    assert ("secretRef", k8s_kind("Secret")["metadata"]["name"]) in refs


def test_grace_period_exceeds_shutdown_timeout():
    deployment, _ = deployment_container()
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    timeout = k8s_kind("ConfigMap")["data"].get(
        "MESH_WORKER_SHUTDOWN_TIMEOUT", "10s")
    assert grace == 30
    assert grace > duration_seconds(timeout)


def test_k8s_variables_are_documented_and_valid():
    config = k8s_kind("ConfigMap")["data"]
    secret = k8s_kind("Secret")
    secret_vars = dict(secret.get("stringData") or {})
    secret_vars.update(secret.get("data") or {})
    _, source, _ = documented_variables()
    bad = undocumented(list(config) + list(secret_vars))
    assert not bad, f"not in {source}: {bad}"
    errors = passthrough_errors(config)
    assert not errors, errors
    assert "MESH_WORKER_DATABASE_URL" not in config, \
        "the database URL carries a password: it belongs in the Secret"


def test_secret_example_holds_placeholders_only():
    secret = k8s_kind("Secret")
    for key, value in (secret.get("stringData") or {}).items():
        assert "CHANGE-ME" in value, f"{key} is not a marked placeholder"


def test_service_exposes_metrics_port():
    service = k8s_kind("Service")
    deployment, container = deployment_container()
    selector = service["spec"]["selector"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in selector.items())
    ports = service["spec"]["ports"]
    assert any(p["port"] == HTTP_PORT for p in ports)


def test_autoscaling_follows_the_consumer_group_lag():
    scaled = k8s_kind("ScaledObject")
    config = k8s_kind("ConfigMap")["data"]
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == \
        k8s_kind("Deployment")["metadata"]["name"]
    assert 1 <= spec["maxReplicaCount"] <= REQUESTS_PARTITIONS
    triggers = [t for t in spec["triggers"] if t["type"] == "kafka"]
    assert len(triggers) == 1
    meta = triggers[0]["metadata"]
    assert meta["consumerGroup"] == config.get("MESH_WORKER_GROUP_ID",
                                               "mesh-worker") == "mesh-worker"
    assert meta["topic"] == config.get("MESH_WORKER_TOPIC_REQUESTS",
                                       "customer.requests")
    assert meta["topic"] == "customer.requests"
    assert str(meta["lagThreshold"]) == "1000"


def test_kustomization_lists_existing_files_but_not_the_secret():
    path = K8S / "kustomization.yaml"
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        resources = yaml.safe_load(f)["resources"]
    for resource in resources:
        assert (K8S / resource).exists(), resource
    assert not any("secret" in r for r in resources)


# ---------------------------------------------------------------- examples

def test_examples_are_json_objects_with_numbered_names():
    found = examples()
    assert len(found) >= 12, f"only {len(found)} examples"
    for name, obj in found:
        assert re.fullmatch(r"\d\d-[a-z0-9-]+\.json", name), name
        assert isinstance(obj, dict), f"{name}: not one JSON object"
        assert obj.get("request_id"), f"{name}: no request_id"


def test_examples_have_unique_request_ids_but_the_conflict():
    seen = {}
    duplicates = []
    for name, obj in examples():
        rid = obj["request_id"]
        if rid in seen:
            duplicates.append((seen[rid], name))
        else:
            seen[rid] = name
    assert len(duplicates) == 1, f"expected one deliberate conflict: {duplicates}"
    first, second = duplicates[0]
    assert "conflict" in second and not is_rejected(first), duplicates


def test_conflict_changes_one_field_of_an_earlier_valid_request():
    found = dict(examples())
    by_id = {}
    for name in sorted(found):
        by_id.setdefault(found[name]["request_id"], []).append(name)
    pair = next(names for names in by_id.values() if len(names) > 1)
    original, conflict = (found[n] for n in pair)
    changed = sorted(k for k in set(original) | set(conflict)
                     if k != "requested_at"
                     and original.get(k) != conflict.get(k))
    assert len(changed) == 1, f"{pair}: fields changed: {changed}"
    assert original["msp_id"] == conflict["msp_id"], \
        "same MSP, so both land on one partition in order"


def test_domain_taken_example_follows_its_owner():
    found = creations()
    taken = [(n, o) for n, o in found if "domain-taken" in n]
    assert len(taken) == 1
    name, obj = taken[0]
    earlier = [(n, o) for n, o in found if n < name and not is_rejected(n)]
    owners = [(n, o) for n, o in earlier
              if obj["primary_domain"] == o.get("primary_domain")
              or obj["primary_domain"] in o.get("additional_domains", [])]
    assert owners, f"{name}: no earlier valid example owns its domain"
    assert owners[0][1]["msp_id"] == obj["msp_id"], \
        "same MSP, so the owner is provisioned first"


def test_valid_examples_cover_every_service_and_account_type():
    valid = [o for n, o in creations() if not is_rejected(n)]
    assert {o["service"] for o in valid} >= \
        {"MESH_GATEWAY", "MESH_365", "MESH_UNIFIED"}
    assert {o["account_type"] for o in valid} >= {"BUY_NOW", "TRIAL", "NFR"}


def under(domain, parent):
    domain = domain.lower().rstrip(".")
    parent = parent.lower().rstrip(".")
    return domain == parent or domain.endswith("." + parent)


def test_valid_examples_have_distinct_domains_and_follow_the_rules():
    owner = {}
    for name, obj in creations():
        if is_rejected(name):
            continue
        domains = [obj["primary_domain"]] + obj.get("additional_domains", [])
        for domain in domains:
            key = domain.lower().rstrip(".")
            assert key not in owner, f"{name}: {domain} also in {owner.get(key)}"
            owner[key] = name
        assert 1 <= obj["licenses"] <= 1000000
        if obj["account_type"] == "NFR":
            assert obj["licenses"] <= 50, name
            assert all(under(d, obj["msp_domain"]) for d in domains), name
        if obj["service"] in ("MESH_GATEWAY", "MESH_UNIFIED"):
            assert obj.get("delivery_destination"), name
        if obj["service"] in ("MESH_365", "MESH_UNIFIED"):
            assert obj["mail_platform"] == "MICROSOFT_365", name
        if obj.get("monitor_mode"):
            assert obj["service"] == "MESH_365", name
        assert "@" in obj["default_admin_email"], name


def test_readme_lists_every_example_and_rejection_code():
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for code in REQUEST_SIDE_CODES:
        assert code in readme, f"examples/README.md does not mention {code}"
    for name, _ in examples():
        assert name in readme, f"examples/README.md does not list {name}"


def test_each_rejection_code_has_an_example_named_for_it():
    names = " ".join(n for n, _ in examples() if is_rejected(n))
    for hint in ("zero-licenses", "destination-typo", "missing-admin",
                 "without-destination", "on-google", "monitor-mode",
                 "nfr-foreign-domain", "nfr-51-licenses", "domain-taken",
                 "request-id-conflict", "several-errors"):
        assert hint in names, f"no rejected example for {hint}"
