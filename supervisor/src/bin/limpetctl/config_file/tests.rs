//! Config files shaped like the examples crictl documents (docs/examples in cri-tools) and
//! like the ones its users write, in JSON and YAML.

use limpet_protos::cri::v1 as cri;

use super::{parse_container, parse_pod};

// The shape of crictl's docs/examples/podsandbox-config.json.
const POD_JSON: &str = r#"{
  "metadata": {
    "name": "nginx-sandbox",
    "namespace": "default",
    "attempt": 1,
    "uid": "hdishd83djaidwnduwk28bcsb"
  },
  "log_directory": "/tmp",
  "linux": {}
}"#;

// The shape of crictl's docs/examples/podsandbox-config.yaml, with its pre-v1 `namespaces`.
const POD_YAML: &str = "metadata:
  attempt: 1
  name: nginx-sandbox
  namespace: default
  uid: hdishd83djaidwnduwk28bcsb
log_directory: /tmp
linux:
  namespaces:
    options: {}
";

// The shape of crictl's docs/examples/container-config.json.
const CONTAINER_JSON: &str = r#"{
  "metadata": {
    "name": "nginx"
  },
  "image": {
    "image": "docker.io/library/nginx"
  },
  "command": ["top"],
  "log_path": "nginx.0.log",
  "linux": {}
}"#;

const CONTAINER_YAML: &str = "metadata:
  name: nginx
image:
  image: docker.io/library/nginx:latest
command:
  - top
log_path: nginx.0.log
";

#[test]
fn crictl_example_pods_decode() {
    let pod = parse_pod(POD_JSON, true).unwrap();
    let meta = pod.config.metadata.clone().unwrap();
    assert_eq!(
        (meta.name.as_str(), meta.namespace.as_str(), meta.attempt),
        ("nginx-sandbox", "default", 1)
    );
    assert_eq!(meta.uid, "hdishd83djaidwnduwk28bcsb");
    assert_eq!(pod.config.log_directory, "/tmp");
    assert_eq!(
        pod.config.linux,
        Some(cri::LinuxPodSandboxConfig::default())
    );

    let yaml = parse_pod(POD_YAML, false).unwrap();
    assert_eq!(yaml.config, pod.config);
    assert!(
        yaml.warnings.iter().any(|w| w.contains("linux.namespaces")),
        "{:?}",
        yaml.warnings
    );
}

#[test]
fn crictl_example_containers_decode() {
    let json = parse_container(CONTAINER_JSON, true).unwrap();
    assert_eq!(json.metadata.unwrap().name, "nginx");
    let image = json.image.unwrap();
    assert_eq!(image.image, "docker.io/library/nginx");
    // crictl fills in what the user asked for
    assert_eq!(image.user_specified_image, "docker.io/library/nginx");
    assert_eq!(json.command, ["top"]);
    assert_eq!(json.log_path, "nginx.0.log");
    assert!(json.linux.is_some());

    let yaml = parse_container(CONTAINER_YAML, false).unwrap();
    assert_eq!(yaml.image.unwrap().image, "docker.io/library/nginx:latest");
    assert!(yaml.linux.is_none());
}

#[test]
fn every_pod_field_users_set() {
    let text = "
metadata: {name: web, namespace: prod, uid: u1}
hostname: web-0
log_directory: /var/log/pods/web
dns_config:
  servers: [10.0.0.10]
  searches: [prod.svc.cluster.local]
  options: [ndots:5]
port_mappings:
  - {protocol: UDP, container_port: 53, host_port: 5353, host_ip: 127.0.0.1}
  - {protocol: 0, container_port: 80}
labels: {app: web}
annotations:
annotations_unused_check: null
";
    // an unknown top-level key is refused, naming it
    let err = parse_pod(text, false).err().unwrap().to_string();
    assert!(err.contains("annotations_unused_check"), "{err}");

    let text = text.replace("annotations_unused_check: null\n", "")
        + "
linux:
  cgroup_parent: /kubepods/pod-web
  sysctls: {net.ipv4.ip_forward: '1'}
  overhead: {cpu_shares: 10}
  resources: {memory_limit_in_bytes: 1048576, cpu_quota: 50000, cpu_period: 100000}
  security_context:
    namespace_options: {network: NODE, pid: container, ipc: 0}
    run_as_user: {value: 1000}
    run_as_group: {value: 2000}
    readonly_rootfs: true
    privileged: false
    supplemental_groups: [5, 6]
    seccomp: {profile_type: Localhost, localhost_ref: /profiles/a.json}
    apparmor: {profile_type: 1}
    selinux_options: {user: system_u, role: system_r, type: spc_t, level: s0}
";
    let pod = parse_pod(&text, false).unwrap().config;
    assert_eq!(pod.hostname, "web-0");
    let dns = pod.dns_config.unwrap();
    assert_eq!(dns.servers, ["10.0.0.10"]);
    assert_eq!(dns.options, ["ndots:5"]);
    assert_eq!(pod.port_mappings[0].protocol, cri::Protocol::Udp as i32);
    assert_eq!(pod.port_mappings[0].host_ip, "127.0.0.1");
    assert_eq!(pod.port_mappings[1].container_port, 80);
    assert!(pod.annotations.is_empty());
    let linux = pod.linux.unwrap();
    assert_eq!(linux.sysctls["net.ipv4.ip_forward"], "1");
    assert_eq!(linux.overhead.unwrap().cpu_shares, 10);
    assert_eq!(linux.resources.unwrap().memory_limit_in_bytes, 1 << 20);
    let sc = linux.security_context.unwrap();
    let ns = sc.namespace_options.unwrap();
    assert_eq!(ns.network, cri::NamespaceMode::Node as i32);
    assert_eq!(ns.pid, cri::NamespaceMode::Container as i32);
    assert_eq!(ns.ipc, cri::NamespaceMode::Pod as i32);
    assert_eq!(sc.run_as_user.unwrap().value, 1000);
    assert_eq!(sc.run_as_group.unwrap().value, 2000);
    assert!(sc.readonly_rootfs);
    assert_eq!(sc.supplemental_groups, [5, 6]);
    let seccomp = sc.seccomp.unwrap();
    assert_eq!(
        seccomp.profile_type,
        cri::security_profile::ProfileType::Localhost as i32
    );
    assert_eq!(seccomp.localhost_ref, "/profiles/a.json");
    assert_eq!(
        sc.apparmor.unwrap().profile_type,
        cri::security_profile::ProfileType::Unconfined as i32
    );
    assert_eq!(sc.selinux_options.unwrap().r#type, "spc_t");
}

#[test]
#[allow(deprecated)]
fn every_container_field_users_set() {
    let text = r#"{
  "metadata": {"name": "app", "attempt": 2},
  "image": {"image": "busybox:latest", "annotations": {"a": "b"}},
  "command": ["/bin/sh", "-c"],
  "args": ["echo hi"],
  "working_dir": "/work",
  "envs": [{"key": "A", "value": "1"}],
  "mounts": [
    {"container_path": "/data", "host_path": "/srv/data", "readonly": true,
     "propagation": "PROPAGATION_HOST_TO_CONTAINER"},
    {"container_path": "/shared", "host_path": "/srv/shared", "propagation": 2,
     "selinux_relabel": true}
  ],
  "devices": [{"container_path": "/dev/fuse", "host_path": "/dev/fuse", "permissions": "rwm"}],
  "labels": {"tier": "db"},
  "annotations": {"note": "x"},
  "log_path": "app/0.log",
  "stdin": true,
  "stdin_once": true,
  "tty": true,
  "linux": {
    "resources": {"cpu_shares": 512, "memory_limit_in_bytes": 67108864, "cpuset_cpus": "0",
                  "hugepage_limits": [{"page_size": "2MB", "limit": 0}],
                  "unified": {"memory.high": "1000000"}},
    "security_context": {
      "capabilities": {"add_capabilities": ["NET_ADMIN"], "drop_capabilities": ["ALL"]},
      "privileged": false,
      "namespace_options": {"pid": "POD", "network": "NODE"},
      "run_as_user": {"value": 0},
      "run_as_username": "root",
      "run_as_group": {"value": 0},
      "readonly_rootfs": true,
      "supplemental_groups": [10],
      "no_new_privs": true,
      "masked_paths": ["/proc/kcore"],
      "readonly_paths": ["/proc/sys"],
      "seccomp": {"profile_type": "RuntimeDefault"},
      "seccomp_profile_path": "runtime/default",
      "apparmor": {"profile_type": "Unconfined"},
      "apparmor_profile": "unconfined"
    }
  }
}"#;
    let c = parse_container(text, true).unwrap();
    assert_eq!(c.metadata.unwrap().attempt, 2);
    assert_eq!(c.args, ["echo hi"]);
    assert_eq!(c.working_dir, "/work");
    assert_eq!(c.envs[0].key, "A");
    assert_eq!(
        c.mounts[0].propagation,
        cri::MountPropagation::PropagationHostToContainer as i32
    );
    assert!(c.mounts[0].readonly);
    assert_eq!(
        c.mounts[1].propagation,
        cri::MountPropagation::PropagationBidirectional as i32
    );
    assert_eq!(c.devices[0].permissions, "rwm");
    assert!(c.stdin && c.stdin_once && c.tty);
    let linux = c.linux.unwrap();
    let r = linux.resources.unwrap();
    assert_eq!((r.cpu_shares, r.memory_limit_in_bytes), (512, 64 << 20));
    assert_eq!(r.hugepage_limits[0].page_size, "2MB");
    assert_eq!(r.unified["memory.high"], "1000000");
    let sc = linux.security_context.unwrap();
    let caps = sc.capabilities.unwrap();
    assert_eq!(caps.add_capabilities, ["NET_ADMIN"]);
    assert_eq!(caps.drop_capabilities, ["ALL"]);
    assert_eq!(
        sc.namespace_options.unwrap().network,
        cri::NamespaceMode::Node as i32
    );
    assert_eq!(sc.run_as_username, "root");
    assert!(sc.no_new_privs && sc.readonly_rootfs);
    assert_eq!(sc.masked_paths, ["/proc/kcore"]);
    assert_eq!(sc.readonly_paths, ["/proc/sys"]);
    assert_eq!(
        sc.seccomp.unwrap().profile_type,
        cri::security_profile::ProfileType::RuntimeDefault as i32
    );
    assert_eq!(sc.seccomp_profile_path, "runtime/default");
    assert_eq!(sc.apparmor_profile, "unconfined");
}

#[test]
fn mistakes_are_named() {
    // a misspelt nested key: the YAML error carries the path to it
    let err = parse_pod(
        "metadata: {name: a, namespace: b}\nlinux:\n  security_context:\n    namespace_option: {network: 2}\n",
        false,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("namespace_option") && err.contains("linux.security_context"),
        "{err}"
    );

    // a bad enum name says what would do
    let err = parse_container(
        r#"{"metadata": {"name": "a"}, "image": {"image": "b"},
            "mounts": [{"container_path": "/x", "propagation": "PROPAGATION_SHARED"}]}"#,
        true,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("PROPAGATION_SHARED") && err.contains("PROPAGATION_BIDIRECTIONAL"),
        "{err}"
    );

    // an enum number out of range
    let err = parse_pod(
        "metadata: {name: a, namespace: b}\nport_mappings: [{protocol: 7}]\n",
        false,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("7 is not a protocol"), "{err}");

    // camelCase is the output's spelling, not the input's
    let err = parse_pod(
        r#"{"metadata": {"name": "a", "namespace": "b"}, "logDirectory": "/tmp"}"#,
        true,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("logDirectory") && err.contains("log_directory"),
        "{err}"
    );

    // a wrong type
    let err = parse_container(
        "metadata: {name: a}\nimage: {image: b}\ncommand: top\n",
        false,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("command"), "{err}");

    // what crictl requires
    let err = parse_pod("log_directory: /tmp\n", false).err().unwrap();
    assert!(err.to_string().contains("metadata"), "{err}");
    let err = parse_pod("metadata: {name: a}\n", false).err().unwrap();
    assert!(err.to_string().contains("namespace"), "{err}");
    let err = parse_container("metadata: {name: a}\n", false)
        .err()
        .unwrap();
    assert!(err.to_string().contains("image"), "{err}");
    assert!(parse_pod("  \n", false).is_err());
}

#[test]
fn a_pod_without_uid_gets_one() {
    let pod = parse_pod("metadata: {name: a, namespace: b}\n", false)
        .unwrap()
        .config;
    let uid = pod.metadata.unwrap().uid;
    assert_eq!(uid.len(), 36, "{uid}");
    assert_eq!(&uid[14..15], "4");
}
