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
pub(crate) struct TlsFiles {
    /// CA certificate.
    pub(crate) ca: PathBuf,
    /// Client certificate.
    pub(crate) cert: PathBuf,
    /// Client key.
    pub(crate) key: PathBuf,
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
    pub(crate) fn tls(&self) -> Option<TlsFiles> {
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
    /// The full id: a restart is sent to it, never to the name again, and
    /// a new id means a new container (recreated by compose).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) id: String,
    /// `State.Status`: created, running, paused, restarting, removing,
    /// exited, dead.
    pub status: String,
    /// `State.Running` (also true while the restart policy waits).
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
    /// The engine's `RestartCount`: restarts by the restart policy since
    /// the container was last started by hand (dockerd resets it then).
    #[serde(default)]
    pub restart_count: i64,
    /// `HostConfig.RestartPolicy.Name` (`always`, `unless-stopped`,
    /// `on-failure`; `None` for `no` or unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) restart_policy: Option<String>,
    /// `State.ExitCode` (dockerd sets it back to 0 when the container
    /// starts, so a crash's code is seen while it is down or `restarting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) exit_code: Option<i64>,
}

impl ContainerFacts {
    /// Extracts the facts from an inspect answer.
    pub(crate) fn from_inspect(r: &bollard::models::ContainerInspectResponse) -> ContainerFacts {
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
        let restart_policy = r
            .host_config
            .as_ref()
            .and_then(|h| h.restart_policy.as_ref())
            .and_then(|p| p.name)
            .map(|n| n.to_string())
            .filter(|n| !n.is_empty() && n != "no");
        ContainerFacts {
            id: r.id.clone().unwrap_or_default(),
            status: state
                .status
                .map(|s| s.to_string().to_lowercase())
                .unwrap_or_default(),
            running: state.running.unwrap_or(false),
            health: health_status,
            health_output,
            started_at: state.started_at.filter(|s| !s.starts_with("0001-")),
            restart_count: r.restart_count.unwrap_or(0),
            restart_policy,
            exit_code: state.exit_code,
        }
    }
}

/// Grades a container. No healthcheck is healthy; a healthcheck still
/// `starting` or a container the engine is `restarting` is not a failure
/// and marked starting so it is never restarted while it boots.
pub(crate) fn grade_container(name: &str, f: &ContainerFacts) -> Probe {
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
        // Between two runs under its restart policy: booting as far as
        // this one look can tell; the flap guard, which compares restart
        // counts across cycles, calls a crash loop.
        ("restarting", _) => Probe {
            starting: true,
            ..Probe::new(
                Status::Warn,
                format!(
                    "{name} restarting (restart policy '{}', engine restart count {}, last exit \
                     code {})",
                    f.restart_policy.as_deref().unwrap_or("?"),
                    f.restart_count,
                    f.exit_code.map_or("?".to_string(), |c| c.to_string())
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
                format!("Docker unreachable at {host}: {}", engine_error(&e)),
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
                format!(
                    "Docker at {host} answers ping but not /version: {}",
                    engine_error(&e)
                ),
            ),
        }
    }

    /// Looks a container up by its exact name. dockerd also resolves a
    /// name to the container whose id starts with it, so a short hex name
    /// that names no container (`b8`) would reach another one: an answer
    /// for a container of another name is [`Lookup::OtherByIdPrefix`].
    async fn lookup(&self, container: &str) -> Result<Lookup> {
        let segment = path_segment(container);
        match self.docker.inspect_container(&segment, None).await {
            Ok(r) => {
                let name = r.name.as_deref().unwrap_or_default();
                let wanted = container.strip_prefix('/').unwrap_or(container);
                if name.strip_prefix('/').unwrap_or(name) == wanted {
                    Ok(Lookup::Found(ContainerFacts::from_inspect(&r)))
                } else {
                    Ok(Lookup::OtherByIdPrefix(
                        name.strip_prefix('/').unwrap_or(name).to_string(),
                    ))
                }
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(Lookup::Missing),
            Err(e) => Err(anyhow::anyhow!("{}", engine_error(&e)))
                .with_context(|| format!("GET {}/containers/{container}/json", self.host)),
        }
    }

    /// Inspects a container by its exact name; `Ok(None)` when no
    /// container has that name.
    pub async fn inspect(&self, container: &str) -> Result<Option<ContainerFacts>> {
        Ok(match self.lookup(container).await? {
            Lookup::Found(f) => Some(f),
            Lookup::Missing | Lookup::OtherByIdPrefix(_) => None,
        })
    }

    /// Probes a container: exists, running, healthy.
    pub(crate) async fn probe_container(&self, container: &str) -> Result<Probe> {
        Ok(match self.lookup(container).await? {
            Lookup::Found(f) => grade_container(container, &f),
            Lookup::Missing => Probe::new(
                Status::Critical,
                format!("container '{container}' not found"),
            ),
            Lookup::OtherByIdPrefix(other) => Probe::new(
                Status::Critical,
                format!(
                    "container '{container}' not found (the engine would take it for '{other}', \
                     whose id starts with it; checks name a container by its exact name)"
                ),
            ),
        })
    }

    /// Restarts the container of exactly this name, giving it `t` seconds
    /// to stop before SIGKILL. The restart goes to the id the name
    /// resolved to, never to the name, which the engine could read as
    /// another container's id prefix.
    pub(crate) async fn restart(&self, container: &str, t: i32) -> Result<()> {
        let Some(facts) = self.inspect(container).await? else {
            bail!("container '{container}' not found; nothing restarted");
        };
        let opts = RestartContainerOptionsBuilder::new().t(t).build();
        self.docker
            .restart_container(&facts.id, Some(opts))
            .await
            .map_err(|e| anyhow::anyhow!("{}", engine_error(&e)))
            .with_context(|| format!("POST {}/containers/{container}/restart?t={t}", self.host))
    }
}

/// What a lookup by name found.
enum Lookup {
    /// The container of that name.
    Found(ContainerFacts),
    /// No container of that name or id.
    Missing,
    /// No container of that name, but the engine resolved the name as a
    /// prefix of this container's id.
    OtherByIdPrefix(String),
}

/// Why a request to an engine failed, in words that say what to fix.
/// hyper's own message is only "client error (Connect)" whatever happened;
/// the cause (nothing listening, the engine's certificate not from our CA,
/// our certificate refused by the engine) is deeper in the error's chain,
/// in rustls' and the OS's words, which are matched here.
pub(crate) fn engine_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut chain: Vec<String> = Vec::new();
    let mut refused = false;
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        let text = err.to_string();
        if !chain.iter().any(|c| c.contains(&text)) {
            chain.push(text);
        }
        cur = err.source();
    }
    let all = chain.join(": ");
    let after = |marker: &str| {
        all.split_once(marker).map(|(_, rest)| {
            rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
                .unwrap_or_default()
                .to_string()
        })
    };
    if refused || all.contains("Connection refused") {
        return "connection refused: nothing listens at that address (engine down, or the \
                wrong port)"
            .into();
    }
    if let Some(why) = after("invalid peer certificate: ") {
        return match why.as_str() {
            "UnknownIssuer" => format!(
                "TLS: the engine's certificate is not signed by the CA in tls_ca ({why}); \
                 tls_ca must be the CA the engine's --tlscert comes from"
            ),
            _ => format!("TLS: the engine's certificate is not acceptable ({why})"),
        };
    }
    if let Some(why) = after("received fatal alert: ") {
        return match why.as_str() {
            "BadCertificate" | "UnknownCA" | "CertificateUnknown" | "CertificateRequired" => {
                format!(
                    "TLS: the engine refused our client certificate ({why}); tls_cert must be \
                     signed by the CA the engine trusts (its --tlscacert)"
                )
            }
            _ => format!("TLS: the engine ended the handshake ({why})"),
        };
    }
    // The most specific message: the last of the chain.
    chain.pop().unwrap_or_else(|| "no detail".into())
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

/// What an incident brief shows of a container beyond what grading needs:
/// read once when an incident opens, never on the probe's path. Every
/// string is the engine's (outside text): the brief scrubs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ContainerEvidence {
    /// `State.Status`.
    pub(crate) status: String,
    /// `State.ExitCode`.
    pub(crate) exit_code: Option<i64>,
    /// `State.OOMKilled`: the kernel killed it for memory.
    pub(crate) oom_killed: bool,
    /// `RestartCount`: restarts by the engine's restart policy.
    pub(crate) restart_count: i64,
    /// `State.Error`, when the engine recorded one (a failed start).
    pub(crate) error: Option<String>,
    /// `State.Health.Status`, when it has a healthcheck.
    pub(crate) health: Option<String>,
    /// The healthcheck's last runs, oldest first: exit code and the first
    /// line of the output.
    pub(crate) health_log: Vec<(i64, String)>,
    /// `Config.Image` (the name it was created from), else the image id.
    pub(crate) image: String,
    /// `State.StartedAt`.
    pub(crate) started_at: Option<String>,
    /// `State.FinishedAt` (the last exit).
    pub(crate) finished_at: Option<String>,
}

impl ContainerEvidence {
    fn from_inspect(r: &bollard::models::ContainerInspectResponse) -> ContainerEvidence {
        let state = r.state.clone().unwrap_or_default();
        let health = state.health.as_ref();
        let set = |s: Option<String>| s.filter(|s| !s.is_empty() && !s.starts_with("0001-"));
        ContainerEvidence {
            status: state
                .status
                .map(|s| s.to_string().to_lowercase())
                .unwrap_or_default(),
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
            restart_count: r.restart_count.unwrap_or(0),
            error: set(state.error.clone()),
            health: health
                .and_then(|h| h.status)
                .map(|s| s.to_string().to_lowercase())
                .filter(|s| !s.is_empty() && s != "none"),
            health_log: health
                .and_then(|h| h.log.as_ref())
                .map(|log| {
                    let skip = log.len().saturating_sub(HEALTH_RUNS_SHOWN);
                    log.iter()
                        .skip(skip)
                        .map(|run| {
                            let first = run
                                .output
                                .as_deref()
                                .and_then(|o| o.lines().find(|l| !l.trim().is_empty()))
                                .unwrap_or("")
                                .trim()
                                .to_string();
                            (run.exit_code.unwrap_or(-1), first)
                        })
                        .collect()
                })
                .unwrap_or_default(),
            image: r
                .config
                .as_ref()
                .and_then(|c| c.image.clone())
                .or_else(|| r.image.clone())
                .unwrap_or_default(),
            started_at: set(state.started_at.clone()),
            finished_at: set(state.finished_at.clone()),
        }
    }
}

/// Healthcheck runs shown in a brief (the engine keeps five).
const HEALTH_RUNS_SHOWN: usize = 3;
/// A log line longer than this is cut as it is read (a JSON blob, a
/// dump): generous, so that the brief, which cuts lines shorter, scrubs a
/// secret whole before it cuts.
pub(crate) const LOG_LINE_CHARS: usize = 1024;
/// The most of a log stream read for a brief: `tail` bounds the lines the
/// engine sends, this bounds an engine (or a proxy) that sends more.
const LOG_READ_BYTES: usize = 256 * 1024;

/// One line of a container's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogLine {
    /// It came on stderr (else stdout or a TTY).
    pub(crate) stderr: bool,
    /// The line, control characters removed, cut at [`LOG_LINE_CHARS`].
    pub(crate) text: String,
}

/// The end of a container's log, as far as it could be read in time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LogTail {
    /// The last lines, oldest first.
    pub(crate) lines: Vec<LogLine>,
    /// Why the tail may be incomplete: the stream did not end by the
    /// deadline, the read cap, an error. `None`: the engine sent it all.
    pub(crate) cut: Option<String>,
}

/// Splits a log stream's frames into lines per stream: a frame is one
/// write of the container, which may hold several lines or part of one.
#[derive(Default)]
struct LineSplitter {
    /// The unfinished line of stdout and of stderr.
    pending: [String; 2],
    lines: std::collections::VecDeque<LogLine>,
    keep: usize,
}

impl LineSplitter {
    fn push(&mut self, stderr: bool, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let mut parts = text.split('\n').peekable();
        while let Some(part) = parts.next() {
            let pending = &mut self.pending[usize::from(stderr)];
            if pending.chars().count() < LOG_LINE_CHARS * 2 {
                pending.push_str(part);
            }
            if parts.peek().is_some() {
                let line = std::mem::take(pending);
                self.line(stderr, &line);
            }
        }
    }

    fn line(&mut self, stderr: bool, line: &str) {
        let clean: String = line
            .chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .collect();
        let clean = clean.trim_end();
        if self.keep == 0 {
            return;
        }
        if self.lines.len() == self.keep {
            self.lines.pop_front();
        }
        self.lines.push_back(LogLine {
            stderr,
            text: crate::text::cap(clean, LOG_LINE_CHARS),
        });
    }

    fn finish(mut self) -> Vec<LogLine> {
        for stderr in [false, true] {
            let rest = std::mem::take(&mut self.pending[usize::from(stderr)]);
            if !rest.is_empty() {
                self.line(stderr, &rest);
            }
        }
        self.lines.into()
    }
}

impl DockerClient {
    /// The facts of a container a brief shows; `Ok(None)` when the engine
    /// says it does not exist.
    pub(crate) async fn evidence(&self, container: &str) -> Result<Option<ContainerEvidence>> {
        let segment = path_segment(container);
        match self.docker.inspect_container(&segment, None).await {
            Ok(r) => Ok(Some(ContainerEvidence::from_inspect(&r))),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("GET {}/containers/{container}/json", self.host))
            }
        }
    }

    /// The last `lines` lines of a container's log, stdout and stderr (the
    /// engine's `tail`, no follow), read until the stream ends or `by`,
    /// whichever comes first: a stream that hangs costs the time left, and
    /// the lines read so far are kept and said to be incomplete. For a
    /// container without a TTY the engine multiplexes both streams in
    /// 8-byte-header frames, which bollard decodes.
    pub(crate) async fn log_tail(
        &self,
        container: &str,
        lines: usize,
        by: tokio::time::Instant,
    ) -> LogTail {
        use futures_util::StreamExt;
        let opts = bollard::query_parameters::LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut stream = self.docker.logs(&path_segment(container), Some(opts));
        let mut split = LineSplitter {
            keep: lines,
            ..LineSplitter::default()
        };
        let mut read = 0usize;
        let cut = loop {
            let frame = match tokio::time::timeout_at(by, stream.next()).await {
                Err(_) => break Some(
                    "the log stream did not end within the time budget: the lines read until then"
                        .to_string(),
                ),
                Ok(None) => break None,
                Ok(Some(Err(e))) => break Some(format!("reading the log failed: {e}")),
                Ok(Some(Ok(frame))) => frame,
            };
            let stderr = matches!(frame, bollard::container::LogOutput::StdErr { .. });
            let bytes = frame.into_bytes();
            read += bytes.len();
            split.push(stderr, &bytes);
            if read >= LOG_READ_BYTES {
                break Some(format!(
                    "stopped reading after {}",
                    crate::http::human_bytes(LOG_READ_BYTES)
                ));
            }
        };
        LogTail {
            lines: split.finish(),
            cut,
        }
    }
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
            id: "0123abcd".into(),
            status: status.into(),
            running: status == "running",
            health: health.map(str::to_string),
            health_output: None,
            started_at: Some("2024-05-01T10:00:00.123456789Z".into()),
            restart_count: 0,
            restart_policy: None,
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

    /// An error with a cause, as the layers under bollard nest them.
    #[derive(Debug)]
    struct Layer(String, Option<Box<dyn std::error::Error + 'static>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref()
        }
    }

    fn hyper_over(cause: Box<dyn std::error::Error + 'static>) -> Layer {
        Layer(
            "Error in the hyper legacy client: client error (Connect)".into(),
            Some(Box::new(Layer(
                "client error (Connect)".into(),
                Some(cause),
            ))),
        )
    }

    #[test]
    fn engine_errors_name_their_cause() {
        let io = |kind, msg: &str| -> Box<dyn std::error::Error> {
            Box::new(std::io::Error::new(kind, msg.to_string()))
        };
        use std::io::ErrorKind::{ConnectionRefused, InvalidData, NotFound, Other};
        let table: Vec<(Box<dyn std::error::Error>, &str)> = vec![
            (
                io(InvalidData, "invalid peer certificate: UnknownIssuer"),
                "not signed by the CA in tls_ca (UnknownIssuer)",
            ),
            (
                io(Other, "received fatal alert: BadCertificate"),
                "refused our client certificate (BadCertificate); tls_cert must be",
            ),
            (
                io(InvalidData, "invalid peer certificate: NotValidForName"),
                "engine's certificate is not acceptable (NotValidForName)",
            ),
            (
                io(Other, "received fatal alert: ProtocolVersion"),
                "ended the handshake (ProtocolVersion)",
            ),
            (
                Box::new(Layer(
                    "tcp connect error".into(),
                    Some(io(ConnectionRefused, "Connection refused (os error 111)")),
                )),
                "connection refused",
            ),
            (
                io(NotFound, "No such file or directory (os error 2)"),
                "No such file or directory (os error 2)",
            ),
        ];
        for (cause, want) in table {
            let got = engine_error(&hyper_over(cause));
            assert!(got.contains(want), "{got} should contain {want}");
            assert!(!got.contains("client error (Connect)"), "{got}");
        }
        let plain = Layer("Docker responded with status code 500: boom".into(), None);
        assert_eq!(
            engine_error(&plain),
            "Docker responded with status code 500: boom"
        );
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
        // dockerd 20.10 for a crash-looping `restart: always` container.
        let looping: bollard::models::ContainerInspectResponse = serde_json::from_str(
            r#"{"Id":"724f55053fef","Name":"/exp-loop","RestartCount":4,
              "State":{"Status":"restarting","Running":true,"Restarting":true,"Pid":0,
              "ExitCode":3,"StartedAt":"2026-12-07T08:01:10.708258938Z"},
              "HostConfig":{"RestartPolicy":{"Name":"always","MaximumRetryCount":0}}}"#,
        )
        .unwrap();
        let f = ContainerFacts::from_inspect(&looping);
        assert_eq!(
            (f.id.as_str(), f.restart_count, f.exit_code),
            ("724f55053fef", 4, Some(3))
        );
        assert_eq!(f.restart_policy.as_deref(), Some("always"));
        let p = grade_container("exp-loop", &f);
        assert!(p.starting, "{p:?}");
        assert_eq!(
            p.reason,
            "exp-loop restarting (restart policy 'always', engine restart count 4, last exit code 3)"
        );
    }

    /// A one-request engine on 127.0.0.1 that answers the logs call with
    /// `body` under API 1.41's raw-stream type, then ends the body, or
    /// (with `hang`) keeps the connection open without ending it.
    async fn log_server(body: Vec<u8>, hang: bool) -> DockerClient {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.docker.raw-stream\r\ntransfer-encoding: chunked\r\n\r\n";
            let mut out = head.as_bytes().to_vec();
            out.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
            out.extend_from_slice(&body);
            out.extend_from_slice(b"\r\n");
            if !hang {
                out.extend_from_slice(b"0\r\n\r\n");
            }
            s.write_all(&out).await.unwrap();
            if hang {
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            }
        });
        DockerClient::connect(&DockerHost::Http(addr.to_string())).unwrap()
    }

    fn frame(stream: u8, payload: &str) -> Vec<u8> {
        let mut f = vec![stream, 0, 0, 0];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload.as_bytes());
        f
    }

    #[tokio::test]
    async fn a_multiplexed_log_is_split_into_lines_per_stream_and_cut() {
        let long = "y".repeat(1500);
        let body = [
            frame(1, "first line\n"),
            frame(2, "an error spl"),
            frame(1, "second\nthird\n"),
            frame(2, "it over two writes\n"),
            frame(1, &format!("{long}\n")),
            frame(1, "no newline at the end \u{1b}[0m"),
        ]
        .concat();
        let client = log_server(body, false).await;
        let by = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let tail = client.log_tail("web", 4, by).await;
        assert_eq!(tail.cut, None);
        let lines: Vec<(bool, String)> =
            tail.lines.into_iter().map(|l| (l.stderr, l.text)).collect();
        assert_eq!(lines.len(), 4, "the last 4 only: {lines:?}");
        assert_eq!(lines[0], (false, "third".to_string()));
        assert_eq!(
            lines[1],
            (true, "an error split over two writes".to_string())
        );
        assert_eq!(lines[2].1.chars().count(), LOG_LINE_CHARS, "cut");
        assert_eq!(lines[3], (false, "no newline at the end [0m".to_string()));
    }

    #[tokio::test]
    async fn a_hanging_log_stream_costs_the_time_left_and_keeps_what_was_read() {
        let body = [frame(1, "booting\n"), frame(2, "FATAL: cannot bind\n")].concat();
        let client = log_server(body, true).await;
        let by = tokio::time::Instant::now() + std::time::Duration::from_millis(300);
        let tail = client.log_tail("web", 30, by).await;
        assert!(tokio::time::Instant::now() < by + std::time::Duration::from_secs(2));
        let texts: Vec<&str> = tail.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["booting", "FATAL: cannot bind"]);
        assert!(tail
            .cut
            .unwrap()
            .contains("did not end within the time budget"));
    }
}
