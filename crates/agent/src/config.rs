//! The agent's configuration: who it is, where its master is, what it offers.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use drover_coord::url::ZkUrl;
use drover_core::Resources;

pub use crate::checkpoint::RecoverMode;

/// The agent's HTTP port (Mesos' default).
pub const DEFAULT_PORT: u16 = 5051;
/// What a simulated agent offers unless its scenario says.
pub const SIM_DEFAULT_RESOURCES: &str = "cpus:4;mem:8192;disk:100000;ports:[31000-32000]";
/// How long the agent waits for a ping before it looks for a master again: 5 missed pings of 15 s.
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(75);

/// Where the leading master is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterLocator {
    /// `zk://[user:password@]h1:2181,h2:2181/mesos`: the lowest `json.info_` member under the
    /// path (read with the URL's digest credentials, when it has some).
    Zk(ZkUrl),
    /// `HOST:PORT`: that master.
    Direct { host: String, port: u16 },
}

impl std::fmt::Display for MasterLocator {
    /// As given, but a zk:// URL's password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MasterLocator::Zk(url) => write!(f, "{url}"),
            MasterLocator::Direct { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl std::str::FromStr for MasterLocator {
    type Err = String;

    /// Errors never repeat the text: a zk:// URL may hold a password.
    fn from_str(text: &str) -> Result<MasterLocator, String> {
        let text = text.trim();
        if text.starts_with("zk://") {
            return text
                .parse()
                .map(MasterLocator::Zk)
                .map_err(|e| format!("--master zk://...: {e}"));
        }
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("--master {text:?}: expected HOST:PORT or zk://HOSTS/PATH"))?;
        let port = port
            .parse()
            .map_err(|_| format!("--master {text:?}: the port must be a number"))?;
        if host.is_empty() {
            return Err(format!("--master {text:?}: the host is missing"));
        }
        Ok(MasterLocator::Direct {
            host: host.trim_matches(['[', ']']).to_string(),
            port,
        })
    }
}

#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The name the master and frameworks know the agent by (`HOST` of its tasks).
    pub hostname: String,
    /// The address the HTTP API listens on.
    pub ip: IpAddr,
    /// The HTTP port (`/state`, `/health`); 0 picks a free one.
    pub port: u16,
    pub master: MasterLocator,
    pub resources: Resources,
    /// Mesos' text form: `rack:r1;zone:a`.
    pub attributes: String,
    pub recover: RecoverMode,
    /// No ping for this long: the master is taken as gone and looked for again.
    pub ping_timeout: Duration,
    /// No `Registered` within this long after connecting: try again.
    pub registration_timeout: Duration,
    /// The first registration attempt waits a random time below this; each retry doubles the
    /// bound, up to `registration_backoff_max` (Mesos' `--registration_backoff_factor`).
    pub registration_backoff: Duration,
    pub registration_backoff_max: Duration,
    pub connect_timeout: Duration,
    /// The session timeout of the ZooKeeper session used to find the master.
    pub zk_session_timeout: Duration,
    /// What the agent proves to the master before it registers (Mesos' `--credential`).
    pub credential: Option<drover_core::auth::Credential>,
}

impl AgentConfig {
    /// The address the agent is reached at when it listens on one (`--ip`), else `None` (it is
    /// reached by its host name).
    pub fn address(&self) -> Option<String> {
        (!self.ip.is_unspecified()).then(|| self.ip.to_string())
    }

    pub fn new(hostname: &str, master: MasterLocator, resources: Resources) -> AgentConfig {
        AgentConfig {
            hostname: hostname.to_string(),
            ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: DEFAULT_PORT,
            master,
            resources,
            attributes: String::new(),
            recover: RecoverMode::Reconnect,
            ping_timeout: DEFAULT_PING_TIMEOUT,
            registration_timeout: Duration::from_secs(10),
            registration_backoff: Duration::from_secs(1),
            registration_backoff_max: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            zk_session_timeout: Duration::from_secs(10),
            credential: None,
        }
    }
}

/// Mesos' text form of attributes (`rack:r1;level:2`) as the JSON object `/state` shows: numbers
/// where they parse, strings otherwise.
pub fn attributes_json(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let mut out = serde_json::Map::new();
    for item in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, value) = item
            .split_once(':')
            .ok_or_else(|| format!("attribute {item:?}: expected NAME:VALUE"))?;
        let value = match value.parse::<f64>() {
            Ok(number) if number.is_finite() => serde_json::json!(number),
            _ => serde_json::json!(value),
        };
        out.insert(name.trim().to_string(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_locators() {
        let Ok(MasterLocator::Zk(url)) = "zk://c1:2181,c2:2181/mesos".parse() else {
            panic!("a zk:// locator");
        };
        assert_eq!(
            url.servers(),
            Ok(vec![("c1".into(), 2181), ("c2".into(), 2181)])
        );
        assert_eq!(url.path, "/mesos");
        // Credentials are the URL's; the password is neither shown nor repeated in errors.
        let with: MasterLocator = "zk://agent:pw@c1:2181/mesos".parse().unwrap();
        assert_eq!(with.to_string(), "zk://agent:***@c1:2181/mesos");
        assert!(!format!("{with:?}").contains("pw"));
        let error = "zk://agent:pw@c1/mesos"
            .parse::<MasterLocator>()
            .unwrap_err();
        assert!(!error.contains("pw"), "{error}");
        assert_eq!(
            "127.0.0.1:5050".parse(),
            Ok(MasterLocator::Direct {
                host: "127.0.0.1".into(),
                port: 5050
            })
        );
        assert!("zk://c1:2181"
            .parse::<MasterLocator>()
            .unwrap_err()
            .contains("/PATH"));
        assert!("zk://c1/mesos"
            .parse::<MasterLocator>()
            .unwrap_err()
            .contains("HOST:PORT"));
        assert!("master".parse::<MasterLocator>().is_err());
        assert!("m:x".parse::<MasterLocator>().is_err());
    }

    #[test]
    fn attributes_as_json() {
        let json = attributes_json("rack:r1; level:2").unwrap();
        assert_eq!(
            serde_json::Value::Object(json),
            serde_json::json!({"rack": "r1", "level": 2.0})
        );
        assert!(attributes_json("rack").is_err());
    }
}
