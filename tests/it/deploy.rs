//! The container and deployment files, checked offline with the tools users' CI would use, and a
//! real Prometheus scraping outrigger with the shipped scrape config.

use crate::support::{eventually, temp_dir, tool, upstream::Behavior, Proxy, Upstream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn dockerfile_passes_hadolint() {
    let Some(hadolint) = tool("hadolint") else {
        return;
    };
    let (ok, out) = run(Command::new(hadolint).arg(root().join("docker/Dockerfile")));
    assert!(ok, "{out}");
}

#[test]
fn kubernetes_manifests_validate_and_embed_a_valid_config() {
    let Some(kv) = tool("kubernetes-validate") else {
        return;
    };
    let dir = root().join("docker/kubernetes");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.ends_with("kustomization.yaml") {
            continue; // kustomize's own file, not a Kubernetes object
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        if doc["kind"] == "PodMonitor" {
            // A CRD: no Kubernetes schema to check it against; its shape is checked here.
            assert_eq!(doc["spec"]["podMetricsEndpoints"][0]["port"], "admin");
            continue;
        }
        if doc["kind"] == "Service" {
            // The admin server is reached on the pod (probes, scraping), never through a Service.
            let ports = doc["spec"]["ports"].as_sequence().unwrap();
            assert!(
                ports
                    .iter()
                    .all(|p| p["name"] != "admin" && p["port"] != 9901),
                "{}: the admin port is on a Service",
                path.display()
            );
        }
        let (ok, out) = run(Command::new(&kv).arg("--strict").arg(&path));
        assert!(ok && out.contains("passed"), "{}: {out}", path.display());
        checked += 1;
        if doc["kind"] == "ConfigMap" {
            let cfg = doc["data"]["outrigger.yaml"].as_str().unwrap();
            let file = temp_dir("k8s").join("outrigger.yaml");
            std::fs::write(&file, cfg).unwrap();
            let (ok, out) = run(Command::new(env!("CARGO_BIN_EXE_outrigger"))
                .args(["validate", "--config"])
                .arg(&file));
            assert!(ok, "the ConfigMap's config: {out}");
        }
    }
    assert_eq!(checked, 4);
}

#[test]
fn compose_prometheus_and_grafana_files_are_consistent() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let (ok, out) = run(Command::new(promtool)
        .args(["check", "config"])
        .arg(root().join("docker/prometheus/prometheus.yml")));
    assert!(ok, "{out}");
    let compose: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root().join("docker/compose.yaml")).unwrap())
            .unwrap();
    let s = &compose["services"];
    assert_eq!(
        s["outrigger"]["network_mode"], "service:app",
        "the sidecar shares the app's network"
    );
    for svc in [
        "app",
        "outrigger",
        "upstream-1",
        "upstream-2",
        "prometheus",
        "grafana",
    ] {
        assert!(s.get(svc).is_some(), "service {svc}");
    }
    let (ok, out) = run(Command::new(env!("CARGO_BIN_EXE_outrigger"))
        .args(["validate", "--config"])
        .arg(root().join("docker/compose/outrigger.yaml")));
    assert!(ok, "{out}");
}

/// Every PromQL expression of the dashboard (panels and template queries) and of the alerting
/// rules.
fn shipped_queries() -> (Vec<String>, Vec<String>, serde_json::Value) {
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("docker/grafana/outrigger.json")).unwrap(),
    )
    .unwrap();
    let panels: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    let rules: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("docker/prometheus/alerts.yaml")).unwrap(),
    )
    .unwrap();
    let alerts: Vec<String> = rules["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r["expr"].as_str().unwrap().to_owned())
        .collect();
    (panels, alerts, dash)
}

/// Metric names in a PromQL expression (ours and the process collector's), histogram series
/// suffixes taken off.
fn metric_names(expr: &str) -> Vec<String> {
    let re = regex::Regex::new(r"\b(outrigger|process)_[a-z_]+").unwrap();
    re.find_iter(expr)
        .map(|m| {
            let n = m.as_str();
            n.strip_suffix("_bucket")
                .or_else(|| n.strip_suffix("_count"))
                .or_else(|| n.strip_suffix("_sum"))
                .filter(|b| b.ends_with("_seconds"))
                .unwrap_or(n)
                .to_owned()
        })
        .collect()
}

/// The dashboard and the alerts use only metrics (and labels) that a running outrigger
/// exports: one with HTTP, TLS and TCP listeners, scraped for real.
#[tokio::test]
async fn dashboard_and_alerts_use_what_the_binary_exports() {
    let up = Upstream::start("up", Behavior::Name).await;
    let dir = temp_dir("dash");
    let cert = crate::support::tls::self_signed(&["dash.test"]);
    crate::tls::write_server_cert(&dir, &cert);
    let yaml = format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - {{ name: web, address: \"127.0.0.1:0\", routes: [{{ match: {{ path_prefix: / }}, cluster: app }}] }}\n  - {{ name: secure, address: \"127.0.0.1:0\", tls: {{ cert: server.pem, key: server.key }}, routes: [{{ match: {{ path_prefix: / }}, cluster: app }}] }}\n  - {{ name: db, address: \"127.0.0.1:0\", protocol: tcp, cluster: app }}\nclusters:\n  - {{ name: app, endpoints: [{{address: \"{}\"}}] }}\n",
        up.addr
    );
    std::fs::write(dir.join("outrigger.yaml"), yaml).unwrap();
    let proxy = Proxy::start_file(&dir.join("outrigger.yaml")).await;
    assert_eq!(
        crate::support::get(proxy.listener("web"), "/").await.status,
        200
    );
    let _tcp = tokio::net::TcpStream::connect(proxy.listener("db"))
        .await
        .unwrap();
    let m = proxy.metrics().await;
    // family name -> its label names, from the samples.
    let mut families: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for line in m.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (name, rest) = line.split_once(['{', ' ']).unwrap();
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| b.ends_with("_seconds")))
            .unwrap_or(name);
        let labels = families.entry(base.to_owned()).or_default();
        if let Some((inside, _)) = rest.split_once('}') {
            for pair in inside.split("\",") {
                if let Some((k, _)) = pair.split_once('=') {
                    labels.insert(k.trim_start_matches(',').to_owned());
                }
            }
        }
    }
    // Labels Prometheus adds when it scrapes (job, instance) or Kubernetes discovery adds.
    let target_labels = ["job", "instance", "namespace", "pod", "le"];
    let (panels, alerts, dash) = shipped_queries();
    let by = regex::Regex::new(r"by \(([^)]*)\)").unwrap();
    let selector = regex::Regex::new(r"([a-z_]+)(=~|!=|=)").unwrap();
    for expr in panels.iter().chain(&alerts) {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no metric in {expr}");
        for n in &names {
            assert!(
                families.contains_key(n),
                "{n} (in {expr}) is not exported:\n{m}"
            );
        }
        // Every label grouped or matched on is one of the metrics' or a target label.
        let known = |l: &str| {
            l == "$group_by"
                || target_labels.contains(&l)
                || names.iter().any(|n| families[n].contains(l))
        };
        for c in by.captures_iter(expr) {
            for l in c[1].split(',').map(str::trim) {
                assert!(known(l), "label {l} in {expr}");
            }
        }
        for c in selector.captures_iter(expr) {
            assert!(known(&c[1]), "label {} in {expr}", &c[1]);
        }
    }
    // The dashboard is fleet-ready: variables for the data source and the target labels, every
    // variable it uses defined, and rates over Grafana's $__rate_interval.
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for v in [
        "datasource",
        "job",
        "namespace",
        "pod",
        "instance",
        "cluster",
        "group_by",
    ] {
        assert!(vars.contains(&v), "variable {v}");
    }
    let used = regex::Regex::new(r"\$([a-z_]+)").unwrap();
    for expr in &panels {
        for c in used.captures_iter(expr) {
            assert!(
                vars.contains(&&c[1]) || &c[1] == "__rate_interval",
                "${} in {expr}",
                &c[1]
            );
        }
        if expr.contains("rate(") {
            assert!(
                !expr.contains("[1m]") && !expr.contains("[5m]"),
                "a fixed range in {expr}"
            );
        }
        assert!(
            expr.contains("job=~\"$job\""),
            "not filtered by the variables: {expr}"
        );
    }
    for p in dash["panels"].as_array().unwrap() {
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }
    let titles: Vec<&str> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for want in [
        "Upstream latency p50 / p99",
        "Retries",
        "Circuit breakers",
        "Load shed",
        "Certificate expiry",
        "TCP throughput",
    ] {
        assert!(titles.contains(&want), "panel {want}");
    }
}

#[test]
fn alerting_rules_check_and_pass_their_unit_tests() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let dir = root().join("docker/prometheus");
    let (ok, out) = run(Command::new(&promtool)
        .args(["check", "rules", "alerts.yaml"])
        .current_dir(&dir));
    assert!(ok && out.contains("SUCCESS: 7 rules found"), "{out}");
    let (ok, out) = run(Command::new(&promtool)
        .args(["test", "rules", "alerts.test.yaml"])
        .current_dir(&dir));
    assert!(ok && out.contains("SUCCESS"), "{out}");
}

#[tokio::test]
async fn a_real_prometheus_scrapes_outrigger_with_the_shipped_config() {
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    let up = Upstream::start("up", Behavior::Name).await;
    let proxy = Proxy::start(&format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - {{ name: ingress, address: \"127.0.0.1:0\", routes: [{{ match: {{ path_prefix: / }}, cluster: c }}] }}\nclusters:\n  - {{ name: c, endpoints: [{{address: \"{}\"}}] }}\n",
        up.addr
    ))
    .await;
    // The compose scrape config, pointed at this outrigger and made quick.
    let dir = temp_dir("prometheus");
    let shipped = std::fs::read_to_string(root().join("docker/prometheus/prometheus.yml")).unwrap();
    // With the shipped rules, so a rule Prometheus itself refuses fails here too.
    std::fs::copy(
        root().join("docker/prometheus/alerts.yaml"),
        dir.join("alerts.yaml"),
    )
    .unwrap();
    let cfg = shipped
        .replace("app:9901", &proxy.admin().to_string())
        .replace("scrape_interval: 5s", "scrape_interval: 1s");
    std::fs::write(dir.join("prometheus.yml"), cfg).unwrap();
    let web = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = tokio::process::Command::new(prometheus)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let value = eventually(
        Duration::from_secs(60),
        "prometheus reports up == 1 for outrigger",
        || async move {
            let r = tokio::time::timeout(
                Duration::from_secs(2),
                crate::support::try_get(web, "/api/v1/query?query=up%7Bjob%3D%22outrigger%22%7D"),
            )
            .await
            .ok()??;
            let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
            let value = v["data"]["result"][0]["value"][1].as_str()?.to_owned();
            (value == "1").then_some(value)
        },
    )
    .await;
    assert_eq!(value, "1");
    let _ = child.kill().await; // stopped by its handle (PID), never by name
}

/// Pod Security Standards, "restricted" profile (which includes "baseline"), for one pod spec:
/// every rule of https://kubernetes.io/docs/concepts/security/pod-security-standards/ that a
/// manifest can break, plus ours: every container, init containers included, carries its own
/// securityContext with `seccompProfile: RuntimeDefault`. Returns each violation.
fn pod_security_violations(pod: &serde_yaml::Value) -> Vec<String> {
    let mut bad = Vec::new();
    let psc = &pod["securityContext"];
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[host] == true {
            bad.push(format!("spec.{host} is true"));
        }
    }
    const VOLUMES: [&str; 8] = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    for v in pod["volumes"].as_sequence().into_iter().flatten() {
        let kinds: Vec<&str> = v
            .as_mapping()
            .unwrap()
            .keys()
            .filter_map(|k| k.as_str())
            .filter(|k| *k != "name")
            .collect();
        if kinds.iter().any(|k| !VOLUMES.contains(k)) {
            bad.push(format!("volume {:?} is of type {kinds:?}", v["name"]));
        }
    }
    let seccomp_ok =
        |p: &serde_yaml::Value| p["type"] == "RuntimeDefault" || p["type"] == "Localhost";
    if !psc["seccompProfile"].is_null() && !seccomp_ok(&psc["seccompProfile"]) {
        bad.push("pod seccompProfile is not RuntimeDefault or Localhost".into());
    }
    for s in psc["sysctls"].as_sequence().into_iter().flatten() {
        bad.push(format!("pod sets sysctl {:?}", s["name"]));
    }
    if psc["runAsUser"] == 0 {
        bad.push("pod runAsUser is 0".into());
    }
    let containers = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| pod[*k].as_sequence().cloned().unwrap_or_default());
    for c in containers {
        let name = c["name"].as_str().unwrap_or("?").to_owned();
        let sc = &c["securityContext"];
        let mut no = |what: &str| bad.push(format!("container {name}: {what}"));
        if sc.is_null() {
            no("has no securityContext");
            continue;
        }
        if sc["privileged"] == true {
            no("is privileged");
        }
        if sc["allowPrivilegeEscalation"] != false {
            no("allowPrivilegeEscalation is not false");
        }
        if sc["runAsNonRoot"] != true && psc["runAsNonRoot"] != true {
            no("runAsNonRoot is not true (here or on the pod)");
        }
        if sc["runAsUser"] == 0 {
            no("runAsUser is 0");
        }
        if sc["seccompProfile"]["type"] != "RuntimeDefault" {
            no("seccompProfile is not RuntimeDefault");
        }
        let drops = sc["capabilities"]["drop"]
            .as_sequence()
            .cloned()
            .unwrap_or_default();
        if !drops.iter().any(|d| d == "ALL") {
            no("capabilities do not drop ALL");
        }
        for a in sc["capabilities"]["add"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            if a != "NET_BIND_SERVICE" {
                no(&format!("adds capability {a:?}"));
            }
        }
        if !sc["procMount"].is_null() && sc["procMount"] != "Default" {
            no("procMount is not Default");
        }
        if sc["appArmorProfile"]["type"] == "Unconfined" {
            no("AppArmor is unconfined");
        }
        let se = &sc["seLinuxOptions"]["type"];
        if !se.is_null()
            && ![
                "container_t",
                "container_init_t",
                "container_kvm_t",
                "container_engine_t",
            ]
            .iter()
            .any(|t| se == *t)
        {
            no("seLinuxOptions.type is not a container type");
        }
        for p in c["ports"].as_sequence().into_iter().flatten() {
            if !p["hostPort"].is_null() && p["hostPort"] != 0 {
                no("uses a hostPort");
            }
        }
    }
    bad
}

#[test]
fn deployments_pass_pod_security_restricted() {
    let dir = root().join("docker/kubernetes");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        if doc["kind"] != "Deployment" {
            continue;
        }
        let pod = &doc["spec"]["template"]["spec"];
        let bad = pod_security_violations(pod);
        assert!(bad.is_empty(), "{}: {bad:#?}", path.display());
        checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    checked.sort();
    assert_eq!(
        checked,
        ["deployment-classic.yaml", "deployment-native-sidecar.yaml"]
    );
    // The checker itself catches what it should.
    let weak: serde_yaml::Value = serde_yaml::from_str(
        "hostNetwork: true\nvolumes: [{name: h, hostPath: {path: /}}]\ninitContainers: [{name: i, image: x}]\ncontainers:\n  - name: c\n    image: x\n    ports: [{containerPort: 80, hostPort: 80}]\n    securityContext: {allowPrivilegeEscalation: false, runAsNonRoot: true, seccompProfile: {type: Unconfined}, capabilities: {drop: [ALL], add: [NET_ADMIN]}}\n",
    )
    .unwrap();
    let bad = pod_security_violations(&weak);
    assert_eq!(bad.len(), 6, "{bad:#?}");
}

#[test]
fn the_mesh_manifests_validate_and_ask_for_no_more_than_the_capture_needs() {
    let dir = root().join("docker/mesh");
    let read = |f: &str| -> serde_yaml::Value {
        serde_yaml::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
    };
    if let Some(kv) = tool("kubernetes-validate") {
        for f in ["deployment.yaml", "configmap.yaml"] {
            let (ok, out) = run(Command::new(&kv).arg("--strict").arg(dir.join(f)));
            assert!(ok && out.contains("passed"), "{f}: {out}");
        }
    }
    let cm = read("configmap.yaml");
    let file = temp_dir("k8s-mesh").join("outrigger.yaml");
    std::fs::write(&file, cm["data"]["outrigger.yaml"].as_str().unwrap()).unwrap();
    let (ok, out) = run(Command::new(env!("CARGO_BIN_EXE_outrigger"))
        .args(["validate", "--config"])
        .arg(&file));
    assert!(ok, "the mesh ConfigMap's config: {out}");

    let pod = &read("deployment.yaml")["spec"]["template"]["spec"];
    let init = &pod["initContainers"][0];
    assert_eq!(init["args"][0], "iptables");
    let sc = &init["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    let added: Vec<&str> = sc["capabilities"]["add"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(added, ["NET_ADMIN", "NET_RAW"]);
    // The uid the rules exclude is the uid the sidecar runs as: its traffic never loops.
    let sidecar = &pod["initContainers"][1];
    let uid = sidecar["securityContext"]["runAsUser"].as_u64().unwrap();
    assert!(init["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|a| a.as_str() == Some(&format!("--proxy-uid={uid}"))));
    // Every Pod Security "restricted" rule holds except for the init container's capture.
    let bad = pod_security_violations(pod);
    assert!(
        bad.iter()
            .all(|b| b.starts_with("container outrigger-init:")),
        "{bad:#?}"
    );
}
