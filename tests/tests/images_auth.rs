//! Pulling through limpetd from a real registry that takes only Bearer tokens from a token
//! service (distribution's `auth: token:`): the user's credentials are traded for a token,
//! over limpetctl and over gRPC; a refresh token (`identity_token`) and a pre-issued token
//! (`registry_token`) work too; wrong or missing credentials end in Unauthenticated and
//! leave the store clean.

use std::path::PathBuf;

use limpet_protos::cri::tonic::Code;
use limpet_protos::cri::v1::{AuthConfig, ImageSpec, PullImageRequest};
use limpet_tests::limpetd::{block_on, files_under, ready, Limpetd, Options};
use limpet_tests::registry::layout::{self, assert_layer_unpacked, Compression, Layer};
use limpet_tests::registry::token::TokenServer;
use limpet_tests::registry::Registry;
use limpetd::digest::{chain_ids, Digest};
use limpetd::store::Store;

const USER: &str = "puller";
const PASSWORD: &str = "t0ken-s3cret";

/// A token service, a registry that trusts it holding `busybox:single` and `busybox:multi`
/// (pushed through the token flow), and a limpetd.
struct Setup {
    tokens: TokenServer,
    reg: Registry,
    layers: Vec<Layer>,
    d: Limpetd,
    _work: tempfile::TempDir,
}

fn setup(case: &str) -> Option<Setup> {
    let tokens = ready(case, TokenServer::start(USER, PASSWORD))?;
    let reg = ready(case, Registry::start_token(&tokens))?;
    let work = tempfile::tempdir().expect("temp dir");
    let base = ready(case, layout::busybox_layer_tar())?;
    let layers = vec![
        Layer::new(base, Compression::Gzip),
        Layer::new(layout::layer2_tar(), Compression::Gzip),
    ];
    let mut l = ready(case, layout::Layout::create(&work.path().join("layout")))?;
    let single = l
        .image(
            &[&layers[0]],
            layout::host_arch(),
            serde_json::json!({}),
            false,
        )
        .expect("image");
    l.tag("single", &single);
    let multi = l
        .image(
            &[&layers[0], &layers[1]],
            layout::host_arch(),
            serde_json::json!({}),
            false,
        )
        .expect("image");
    l.tag("multi", &multi);
    l.save().expect("save layout");
    let pushed = tokens.issued();
    for tag in ["single", "multi"] {
        ready(case, reg.push(&l.dir, tag, &format!("busybox:{tag}")))?;
    }
    assert!(tokens.issued() > pushed, "skopeo pushed without a token");
    let d = ready(case, Limpetd::start(Options::default()))?;
    Some(Setup {
        tokens,
        reg,
        layers,
        d,
        _work: work,
    })
}

impl Setup {
    fn image(&self, tag: &str) -> String {
        format!("{}/busybox:{tag}", self.reg.addr)
    }

    /// The unpacked snapshots of the first `n` layers match their tars.
    fn check_unpacked(&self, n: usize) {
        let layers = &self.layers[..n];
        let diffs: Vec<Digest> = layers
            .iter()
            .map(|l| l.diff_id.parse().expect("diff id"))
            .collect();
        let store = Store::open(&self.d.root.join("meta.db")).expect("open metadata");
        for (layer, chain) in layers.iter().zip(chain_ids(&diffs)) {
            let rec = store
                .snapshot(&chain)
                .expect("query")
                .unwrap_or_else(|| panic!("no snapshot {chain}"));
            let dir: PathBuf = self
                .d
                .root
                .join("snapshots")
                .join(rec.id.to_string())
                .join("fs");
            assert_layer_unpacked(&layer.tar, &dir);
        }
    }

    /// Pulls over gRPC with `auth`.
    fn grpc_pull(&self, tag: &str, auth: AuthConfig) -> Result<String, (Code, String)> {
        let image = self.image(tag);
        block_on(async {
            let mut c = self.d.images().await;
            c.pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                auth: Some(auth),
                sandbox_config: None,
            })
            .await
            .map(|r| r.into_inner().image_ref)
            .map_err(|s| (s.code(), s.message().to_string()))
        })
    }

    /// `limpetctl images -q`, one id a line.
    fn image_ids(&self) -> Vec<String> {
        self.d
            .ctl_ok(&["images", "-q"])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// No image, no blob, no snapshot.
fn assert_clean(d: &Limpetd) {
    assert_eq!(
        d.ctl_ok(&["images", "-q"]).trim(),
        "",
        "an image record was left"
    );
    let content = files_under(&d.root.join("content"));
    assert!(content.is_empty(), "content store not clean: {content:?}");
    let snaps = files_under(&d.root.join("snapshots"));
    assert!(snaps.is_empty(), "snapshot files left: {snaps:?}");
    let store = Store::open(&d.root.join("meta.db")).expect("metadata");
    assert!(
        store.snapshots().expect("snapshots").is_empty(),
        "snapshot records left"
    );
}

fn password_auth(password: &str) -> AuthConfig {
    AuthConfig {
        username: USER.into(),
        password: password.into(),
        ..Default::default()
    }
}

#[test]
fn bearer_token_from_user_credentials() {
    let Some(s) = setup("bearer_token_from_user_credentials") else {
        return;
    };
    let before = s.tokens.issued();
    let out = s.d.ctl_ok(&[
        "pull",
        "--creds",
        &format!("{USER}:{PASSWORD}"),
        &s.image("single"),
    ]);
    assert!(out.starts_with("Image is up to date for sha256:"), "{out}");
    assert!(s.tokens.issued() > before, "no token was asked for");
    s.check_unpacked(1);
    assert_eq!(s.image_ids().len(), 1);

    let before = s.tokens.issued();
    let id = s
        .grpc_pull("multi", password_auth(PASSWORD))
        .unwrap_or_else(|e| panic!("gRPC pull with username/password: {e:?}"));
    assert!(s.tokens.issued() > before, "no token was asked for");
    s.check_unpacked(2);
    assert!(s.image_ids().contains(&id), "{id} not listed");
    let table = s.d.ctl_ok(&["images"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&format!("{}/busybox", s.reg.addr)) && l.contains(" multi ")),
        "{table}"
    );
    // the manifest came from the token-protected registry, not from anywhere else
    assert!(
        s.reg.log().contains("/v2/busybox/manifests/multi"),
        "{}",
        s.reg.log()
    );
}

#[test]
fn bearer_wrong_or_missing_credentials_leave_nothing() {
    let Some(s) = setup("bearer_wrong_or_missing_credentials_leave_nothing") else {
        return;
    };
    let image = s.image("single");
    let asked = s.tokens.requests();
    // no credentials: the token service refuses the anonymous request
    let out = s.d.ctl(&["pull", &image]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "anonymous pull succeeded");
    assert!(
        err.contains("Unauthenticated") && err.contains("token service"),
        "{err}"
    );
    assert_clean(&s.d);
    assert!(s.tokens.requests() > asked, "token service was not asked");

    // a wrong password over limpetctl and over gRPC
    let out =
        s.d.ctl(&["pull", "--creds", &format!("{USER}:wrong"), &image]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "wrong password accepted");
    assert!(
        err.contains("Unauthenticated") && err.contains("401"),
        "{err}"
    );
    assert_clean(&s.d);
    let (code, message) = s
        .grpc_pull("single", password_auth("wrong"))
        .expect_err("wrong password accepted over gRPC");
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert!(message.contains(&s.tokens.realm()), "{message}");
    assert_clean(&s.d);

    // a forged token: the registry refuses it and the anonymous fallback gets no token
    let forged = AuthConfig {
        registry_token: "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJtZSJ9.c2ln".into(),
        ..Default::default()
    };
    let (code, message) = s
        .grpc_pull("single", forged)
        .expect_err("forged token accepted");
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert_clean(&s.d);
}

#[test]
fn bearer_refresh_and_pre_issued_tokens() {
    let Some(s) = setup("bearer_refresh_and_pre_issued_tokens") else {
        return;
    };
    // identity_token: traded at the token service with grant_type=refresh_token
    let asked = s.tokens.requests();
    let refresh = AuthConfig {
        identity_token: s.tokens.refresh_token().into(),
        ..Default::default()
    };
    let id = s
        .grpc_pull("single", refresh)
        .unwrap_or_else(|e| panic!("pull with identity_token: {e:?}"));
    assert!(s.tokens.requests() > asked, "token service was not asked");
    assert!(s.image_ids().contains(&id));
    s.check_unpacked(1);

    // registry_token: sent as is, the token service is not asked at all
    let token = s.tokens.mint(&["repository:busybox:pull"]);
    let asked = s.tokens.requests();
    let pre_issued = AuthConfig {
        registry_token: token,
        ..Default::default()
    };
    let id = s
        .grpc_pull("multi", pre_issued)
        .unwrap_or_else(|e| panic!("pull with registry_token: {e:?}"));
    assert_eq!(s.tokens.requests(), asked, "a pre-issued token was traded");
    assert!(s.image_ids().contains(&id));
    s.check_unpacked(2);

    // a token for another repository does not open this one
    let other = AuthConfig {
        registry_token: s.tokens.mint(&["repository:other:pull"]),
        ..Default::default()
    };
    s.d.ctl_ok(&["rmi", "--prune"]);
    assert_clean(&s.d);
    let (code, message) = s
        .grpc_pull("single", other)
        .expect_err("token for another repository accepted");
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert_clean(&s.d);

    // nor does a well-formed token whose x5c certificate the registry does not trust
    let stranger = TokenServer::start(USER, PASSWORD).expect("second token service");
    let untrusted = AuthConfig {
        registry_token: stranger.mint(&["repository:busybox:pull"]),
        ..Default::default()
    };
    let (code, message) = s
        .grpc_pull("single", untrusted)
        .expect_err("token from an untrusted issuer key accepted");
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert_clean(&s.d);
}
