//! Docker probes through bollard: where the engine is, whether it answers,
//! and whether a container exists, runs and is healthy. Besides the
//! default engine, `[health.engines.<name>]` names others ([`EngineConfig`],
//! a unix socket or `tcp://` with TLS client certificates, as `docker
//! --tlsverify` uses them), so one agent can watch several hosts.
//!
//! The client is pinned to API 1.41 because Debian's dockerd 20.10 rejects
//! any newer version prefix with HTTP 400, and every engine since serves
//! 1.41. Grading is a pure function of the inspect facts so the table tests
//! cover every state without an engine.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bollard::query_parameters::RestartContainerOptionsBuilder;
use bollard::{ClientVersion, Docker};
use serde::{Deserialize, Serialize};

use super::{Probe, Status};

/// The oldest API we must speak (dockerd 20.10); newer engines serve it too.
pub const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// bollard's own per-request timeout; each check's timeout is shorter and
/// wins, this only bounds calls made outside a check (fixes).
const CLIENT_TIMEOUT_SECS: u64 = 120;

/// Where the Docker Engine API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerHost {
    /// A unix socket path.
    Unix(PathBuf),
    /// Plain HTTP at `host:port` (`tcp://` or `http://`); used by the fake
    /// engine in tests and by engines exposed on a local port.
    Http(String),
    /// HTTPS at `host:port` with client certificates (an engine under
    /// `[health.engines]` with `tls_*` keys).
    Tls(String),
}

impl DockerHost {
    /// Parses a `DOCKER_HOST`-style address. TLS needs certificates, so it
    /// is set up under `[health.engines]` ([`EngineConfig`]), not here; ssh
    /// is not supported.
    pub fn parse(s: &str) -> Result<DockerHost> {
        let s = s.trim();
        if let Some(p) = s.strip_prefix("unix://") {
            if p.is_empty() || !p.starts_with('/') {
                bail!("'{s}' needs an absolute socket path, like unix:///var/run/docker.sock");
            }
            return Ok(DockerHost::Unix(PathBuf::from(p)));
        }
        for scheme in ["tcp://", "http://"] {
            if let Some(rest) = s.strip_prefix(scheme) {
                let rest = rest.trim_end_matches('/');
                if rest.is_empty() || rest.contains('/') {
                    bail!("'{s}' must be {scheme}HOST:PORT");
                }
                return Ok(DockerHost::Http(rest.to_string()));
            }
        }
        bail!("'{s}' is not a supported Docker address (unix:///path, tcp://host:port or http://host:port)")
    }

    /// Picks the engine address: the config override, else `$DOCKER_HOST`,
    /// else Docker Desktop's per-user socket on macOS (the
    /// `/var/run/docker.sock` link exists there only when an option is on)
    /// when it exists, else `/var/run/docker.sock`. Pure: the caller passes
    /// the environment.
    pub(crate) fn resolve(
        config: Option<&str>,
        env: Option<&str>,
        macos: bool,
        home: Option<&Path>,
    ) -> std::result::Result<DockerHost, String> {
        if let Some(c) = config.filter(|c| !c.trim().is_empty()) {
            return DockerHost::parse(c).map_err(|e| format!("health.docker_host: {e:#}"));
        }
        if let Some(e) = env.filter(|e| !e.trim().is_empty()) {
            return DockerHost::parse(e).map_err(|err| format!("DOCKER_HOST: {err:#}"));
        }
        if macos {
            if let Some(sock) = home.map(|h| h.join(".docker/run/docker.sock")) {
                if sock.exists() {
                    return Ok(DockerHost::Unix(sock));
                }
            }
        }
        Ok(DockerHost::Unix(PathBuf::from("/var/run/docker.sock")))
    }
}

impl fmt::Display for DockerHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DockerHost::Unix(p) => write!(f, "unix://{}", p.display()),
            DockerHost::Http(a) => write!(f, "http://{a}"),
            DockerHost::Tls(a) => write!(f, "https://{a}"),
        }
    }
}

/// `[health.engines.<name>]`: a Docker engine other than the default one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// `unix:///path/docker.sock` or `tcp://host:port`.
    pub host: String,
    /// PEM certificate of the CA that signed the engine's certificate.
    /// With `tls_cert` and `tls_key` (all three or none), `tcp://` speaks
    /// HTTPS and the engine is verified against this CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate the engine trusts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of that certificate; a secret, so owner-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

/// The three TLS files of an engine, `~` expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TlsFiles {
    /// CA certificate.
    ca: PathBuf,
    /// Client certificate.
    cert: PathBuf,
    /// Client key.
    key: PathBuf,
}

impl EngineConfig {
    /// Checks the address and that TLS is all or nothing, on `tcp://`.
    /// `at` names the table in errors.
    pub(crate) fn validate(&self, at: &str) -> Result<()> {
        let host =
            DockerHost::parse(&self.host).map_err(|e| anyhow::anyhow!("{at}.host: {e:#}"))?;
        let set = [&self.tls_ca, &self.tls_cert, &self.tls_key]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if set != 0 && set != 3 {
            bail!("{at}: set all of tls_ca, tls_cert and tls_key, or none");
        }
        if set == 3 && !matches!(host, DockerHost::Http(_)) {
            bail!("{at}: TLS needs a tcp:// host, got '{}'", self.host);
        }
        Ok(())
    }

    /// The TLS files, when set.
    fn tls(&self) -> Option<TlsFiles> {
        let x = |p: &Path| crate::paths::expand_tilde(&p.to_string_lossy());
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (Some(ca), Some(cert), Some(key)) => Some(TlsFiles {
                ca: x(ca),
                cert: x(cert),
                key: x(key),
            }),
            _ => None,
        }
    }
}

/// What inspect told us about a container; kept in results so the flap
/// guard can count restarts and the fix can verify by `StartedAt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerFacts {
    /// `State.Status`: created, running, paused, restarting, removing,
    /// exited, dead.
    pub status: String,
    /// `State.Running`.
    pub(crate) running: bool,
    /// `State.Health.Status` (starting, healthy, unhealthy); `None` when the
    /// container has no healthcheck.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// The last healthcheck's output, first line, for the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) health_output: Option<String>,
    /// `State.StartedAt` (RFC 3339); changes on every start, which is how a
    /// restart is detected (RestartCount is reset by manual restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// The engine's `RestartCount` (restart-policy restarts only).
    #[serde(default)]
    pub restart_count: i64,
    /// `State.ExitCode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) exit_code: Option<i64>,
}

impl ContainerFacts {
    /// Extracts the facts from an inspect answer.
    fn from_inspect(r: &bollard::models::ContainerInspectResponse) -> ContainerFacts {
        let state = r.state.clone().unwrap_or_default();
        let health = state.health.as_ref();
        let health_status = health
            .and_then(|h| h.status)
            .map(|s| s.to_string().to_lowercase())
            .filter(|s| !s.is_empty() && s != "none");
        let health_output = health
            .and_then(|h| h.log.as_ref())
            .and_then(|l| l.last())
            .and_then(|l| l.output.as_deref())
            .and_then(|o| o.lines().find(|l| !l.trim().is_empty()))
            .map(|l| l.trim().chars().take(160).collect());
        ContainerFacts {
            status: state
                .status
                .map(|s| s.to_string().to_lowercase())
                .unwrap_or_default(),
            running: state.running.unwrap_or(false),
            health: health_status,
            health_output,
            started_at: state.started_at.filter(|s| !s.starts_with("0001-")),
            restart_count: r.restart_count.unwrap_or(0),
            exit_code: state.exit_code,
        }
    }
}

/// Grades a container. No healthcheck is healthy; a healthcheck still
/// `starting` or a container the engine is `restarting` is not a failure
/// and marked starting so it is never restarted while it boots.
fn grade_container(name: &str, f: &ContainerFacts) -> Probe {
    let mut p = match (f.status.as_str(), f.health.as_deref()) {
        ("running", None) => Probe::new(Status::Ok, format!("{name} running (no healthcheck)")),
        ("running", Some("healthy")) => Probe::new(Status::Ok, format!("{name} running, healthy")),
        ("running", Some("starting")) => Probe {
            starting: true,
            ..Probe::new(
                Status::Warn,
                format!("{name} running, healthcheck still starting"),
            )
        },
        ("running", Some("unhealthy")) => {
            let out = f
                .health_output
                .as_deref()
                .map(|o| format!(" (last check: {o})"))
                .unwrap_or_default();
            Probe::new(
                Status::Critical,
                format!("{name} running but unhealthy{out}"),
            )
        }
        ("running", Some(other)) => {
            Probe::new(Status::Warn, format!("{name} running, health '{other}'"))
        }
        ("restarting", _) => Probe {
            starting: true,
            ..Probe::new(
                Status::Warn,
                format!(
                    "{name} restarting (engine restart count {})",
                    f.restart_count
                ),
            )
        },
        ("exited", _) | ("dead", _) => Probe::new(
            Status::Critical,
            format!(
                "{name} {} (exit code {})",
                f.status,
                f.exit_code.map_or("?".to_string(), |c| c.to_string())
            ),
        ),
        (other, _) => Probe::new(
            Status::Critical,
            format!(
                "{name} not running (state '{}')",
                if other.is_empty() { "unknown" } else { other }
            ),
        ),
    };
    p.container = Some(f.clone());
    p
}

/// A bollard client pinned to API 1.41, plus the address for messages.
#[derive(Clone)]
pub struct DockerClient {
    docker: Docker,
    host: DockerHost,
}

impl DockerClient {
    /// Connects lazily: bollard opens nothing here (except checking that a
    /// unix socket exists), so an engine that is down shows up as a probe
    /// result, not a start-up error.
    pub fn connect(host: &DockerHost) -> Result<DockerClient> {
        let docker = match host {
            DockerHost::Unix(p) => {
                Docker::connect_with_unix(&p.to_string_lossy(), CLIENT_TIMEOUT_SECS, &API_VERSION)
            }
            DockerHost::Http(a) => {
                Docker::connect_with_http(&format!("http://{a}"), CLIENT_TIMEOUT_SECS, &API_VERSION)
            }
            DockerHost::Tls(_) => {
                bail!("{host}: TLS needs client certificates; name the engine under [health.engines] with tls_ca, tls_cert and tls_key")
            }
        }
        .with_context(|| format!("Docker unreachable at {host}"))?;
        Ok(DockerClient {
            docker,
            host: host.clone(),
        })
    }

    /// Connects to an engine of `[health.engines]`: its socket or plain
    /// `tcp://`, or HTTPS with the client certificate and key when `tls_*`
    /// are set. The key is a secret: it must be ours and owner-only. Like
    /// [`DockerClient::connect`], nothing is dialled here.
    pub(crate) fn connect_engine(cfg: &EngineConfig) -> Result<DockerClient> {
        let host = DockerHost::parse(&cfg.host)?;
        let Some(tls) = cfg.tls() else {
            return DockerClient::connect(&host);
        };
        let DockerHost::Http(addr) = host else {
            bail!("{}: TLS needs a tcp:// address", cfg.host);
        };
        crate::secret::check_file(&tls.key)?;
        let docker = Docker::connect_with_ssl(
            &format!("tcp://{addr}"),
            &tls.key,
            &tls.cert,
            &tls.ca,
            CLIENT_TIMEOUT_SECS,
            &API_VERSION,
        )
        .with_context(|| format!("Docker at https://{addr}: loading the TLS files"))?;
        Ok(DockerClient {
            docker,
            host: DockerHost::Tls(addr),
        })
    }

    /// The engine answers `/_ping` and `/version`.
    pub(crate) async fn probe_engine(&self) -> Probe {
        let host = &self.host;
        if let Err(e) = self.docker.ping().await {
            return Probe::new(
                Status::Critical,
                format!("Docker unreachable at {host}: {e}"),
            );
        }
        match self.docker.version().await {
            Ok(v) => Probe::new(
                Status::Ok,
                format!(
                    "Docker {} (API {}) at {host}",
                    v.version.as_deref().unwrap_or("?"),
                    v.api_version.as_deref().unwrap_or("?")
                ),
            ),
            Err(e) => Probe::new(
                Status::Critical,
                format!("Docker at {host} answers ping but not /version: {e}"),
            ),
        }
    }

    /// Inspects a container; `Ok(None)` when the engine says it does not
    /// exist.
    pub async fn inspect(&self, container: &str) -> Result<Option<ContainerFacts>> {
        let segment = path_segment(container);
        match self.docker.inspect_container(&segment, None).await {
            Ok(r) => Ok(Some(ContainerFacts::from_inspect(&r))),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("GET {}/containers/{container}/json", self.host))
            }
        }
    }

    /// Probes a container: exists, running, healthy.
    pub(crate) async fn probe_container(&self, container: &str) -> Result<Probe> {
        Ok(match self.inspect(container).await? {
            Some(f) => grade_container(container, &f),
            None => Probe::new(
                Status::Critical,
                format!("container '{container}' not found"),
            ),
        })
    }

    /// Restarts a container, giving it `t` seconds to stop before SIGKILL.
    pub(crate) async fn restart(&self, container: &str, t: i32) -> Result<()> {
        let opts = RestartContainerOptionsBuilder::new().t(t).build();
        self.docker
            .restart_container(&path_segment(container), Some(opts))
            .await
            .with_context(|| format!("POST {}/containers/{container}/restart?t={t}", self.host))
    }
}

/// Whether `name` is a container name or id as Docker accepts it
/// (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`, optionally with its leading `/`).
pub(crate) fn valid_container_name(name: &str) -> bool {
    let name = name.strip_prefix('/').unwrap_or(name);
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A container name as one URL path segment: anything outside Docker's
/// grammar is percent-encoded, so `redis/../nginx` can never address
/// another container (validation refuses such names first).
fn path_segment(name: &str) -> String {
    let name = name.strip_prefix('/').unwrap_or(name);
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'_' | b'-')
            || (b == b'.' && name != "." && name != "..")
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_follow_dockers_grammar_and_are_escaped() {
        for ok in ["redis", "web-1", "my_app.v2", "/mattermost", "a1b2c3d4e5f6"] {
            assert!(valid_container_name(ok), "{ok}");
        }
        for bad in [
            "",
            "/",
            "redis/../nginx",
            "-x",
            ".hidden",
            "a b",
            "a?b",
            "..",
            "x%2F",
        ] {
            assert!(!valid_container_name(bad), "{bad}");
        }
        assert_eq!(path_segment("redis/../nginx"), "redis%2F..%2Fnginx");
        assert_eq!(path_segment(".."), "%2E%2E");
        assert_eq!(path_segment("/web-1"), "web-1");
    }

    fn facts(status: &str, health: Option<&str>) -> ContainerFacts {
        ContainerFacts {
            status: status.into(),
            running: status == "running",
            health: health.map(str::to_string),
            health_output: None,
            started_at: Some("2024-05-01T10:00:00.123456789Z".into()),
            restart_count: 0,
            exit_code: Some(0),
        }
    }

    #[test]
    fn grades_every_state() {
        let table = [
            ("running", None, Status::Ok, false, "no healthcheck"),
            ("running", Some("healthy"), Status::Ok, false, "healthy"),
            ("running", Some("starting"), Status::Warn, true, "starting"),
            (
                "running",
                Some("unhealthy"),
                Status::Critical,
                false,
                "unhealthy",
            ),
            ("restarting", None, Status::Warn, true, "restarting"),
            ("exited", None, Status::Critical, false, "exit code 0"),
            ("dead", None, Status::Critical, false, "dead"),
            ("created", None, Status::Critical, false, "'created'"),
            ("paused", None, Status::Critical, false, "'paused'"),
        ];
        for (state, health, status, starting, needle) in table {
            let p = grade_container("c", &facts(state, health));
            assert_eq!(p.status, status, "{state} {health:?}");
            assert_eq!(p.starting, starting, "{state} {health:?}");
            assert!(p.reason.contains(needle), "{state}: {}", p.reason);
        }
    }

    #[test]
    fn host_resolution_order() {
        let home = tempfile::tempdir().unwrap();
        let r = |c, e, mac| DockerHost::resolve(c, e, mac, Some(home.path())).unwrap();
        assert_eq!(
            r(Some("tcp://127.0.0.1:2375"), Some("unix:///x.sock"), false),
            DockerHost::Http("127.0.0.1:2375".into())
        );
        assert_eq!(
            r(None, Some("unix:///run/ci-docker.sock"), false),
            DockerHost::Unix("/run/ci-docker.sock".into())
        );
        assert_eq!(
            r(None, Some("http://127.0.0.1:9/"), false),
            DockerHost::Http("127.0.0.1:9".into())
        );
        let linux = DockerHost::Unix("/var/run/docker.sock".into());
        assert_eq!(r(None, None, false), linux);
        // macOS without Docker Desktop's socket falls back to the default.
        assert_eq!(r(None, None, true), linux);
        let desk = home.path().join(".docker/run");
        std::fs::create_dir_all(&desk).unwrap();
        std::fs::write(desk.join("docker.sock"), "").unwrap();
        assert_eq!(
            r(None, None, true),
            DockerHost::Unix(desk.join("docker.sock"))
        );
        assert_eq!(r(None, None, false), linux);
    }

    #[test]
    fn engines_take_tls_all_or_nothing_and_only_on_tcp() {
        let e = |host: &str, n: usize| EngineConfig {
            host: host.into(),
            tls_ca: (n > 0).then(|| "/ca.pem".into()),
            tls_cert: (n > 1).then(|| "/cert.pem".into()),
            tls_key: (n > 2).then(|| "/key.pem".into()),
        };
        e("tcp://10.0.0.5:2376", 3).validate("x").unwrap();
        e("unix:///run/docker.sock", 0).validate("x").unwrap();
        assert!(e("tcp://h:2376", 3).tls().is_some());
        let err = |c: EngineConfig| c.validate("health.engines.b").unwrap_err().to_string();
        assert!(err(e("tcp://h:2376", 2)).contains("health.engines.b: set all of tls_ca"));
        assert!(err(e("unix:///s.sock", 3)).contains("TLS needs a tcp:// host"));
        assert!(err(e("ssh://h", 0)).starts_with("health.engines.b.host:"));
        let host = DockerHost::Tls("h:2376".into());
        assert_eq!(host.to_string(), "https://h:2376");
        assert!(DockerClient::connect(&host).is_err());
    }

    #[test]
    fn bad_hosts_are_named() {
        for bad in ["ssh://me@host", "unix://relative", "tcp://", "https://h:1"] {
            let err = DockerHost::parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
        let err = DockerHost::resolve(None, Some("npipe:////./pipe/x"), false, None).unwrap_err();
        assert!(err.starts_with("DOCKER_HOST:"), "{err}");
    }

    #[test]
    fn inspect_facts_from_real_json() {
        // Trimmed from dockerd 20.10's answer for an unhealthy container.
        let json = r#"{"Id":"abc","Name":"/ci-unhealthy","RestartCount":0,
          "State":{"Status":"running","Running":true,"Paused":false,"Restarting":false,
          "OOMKilled":false,"Dead":false,"Pid":42,"ExitCode":0,"Error":"",
          "StartedAt":"2024-05-01T10:00:00.123456789Z","FinishedAt":"0001-01-01T00:00:00Z",
          "Health":{"Status":"unhealthy","FailingStreak":3,"Log":[{"Start":"2024-05-01T10:00:01Z",
          "End":"2024-05-01T10:00:01Z","ExitCode":1,"Output":"\nconnection refused\n"}]}}}"#;
        let r: bollard::models::ContainerInspectResponse = serde_json::from_str(json).unwrap();
        let f = ContainerFacts::from_inspect(&r);
        assert_eq!(f.status, "running");
        assert_eq!(f.health.as_deref(), Some("unhealthy"));
        assert_eq!(f.health_output.as_deref(), Some("connection refused"));
        let p = grade_container("ci-unhealthy", &f);
        assert!(p.reason.contains("connection refused"), "{}", p.reason);
        let never: bollard::models::ContainerInspectResponse = serde_json::from_str(
            r#"{"State":{"Status":"created","Running":false,"StartedAt":"0001-01-01T00:00:00Z"}}"#,
        )
        .unwrap();
        assert_eq!(ContainerFacts::from_inspect(&never).started_at, None);
    }
}
