//! `--datastore-*` flags of `berth server`, named as k3s names them, so an HA setup reads the
//! same: they pick etcd instead of the embedded store.

use std::path::PathBuf;

use clap::Args;

use crate::config::StoreConfig;

#[derive(Debug, Clone, Default, Args)]
pub struct DatastoreArgs {
    /// etcd v3 endpoints, e.g. `https://10.0.0.1:2379,https://10.0.0.2:2379` (default: the
    /// embedded store).
    #[arg(long, value_delimiter = ',')]
    pub datastore_endpoint: Vec<String>,
    /// CA certificate that signed the etcd servers' certificates.
    #[arg(long)]
    pub datastore_cafile: Option<PathBuf>,
    /// Client certificate presented to etcd.
    #[arg(long)]
    pub datastore_certfile: Option<PathBuf>,
    /// Key of the client certificate.
    #[arg(long)]
    pub datastore_keyfile: Option<PathBuf>,
    /// Secret shared by every server on the datastore, through which they share the cluster's
    /// CAs and keys; with `--server`, the server token to join with instead.
    #[arg(long)]
    pub token: Option<String>,
}

impl DatastoreArgs {
    /// Lets the flags that were given win over the config file.
    pub fn apply(&self, store: &mut StoreConfig) {
        if !self.datastore_endpoint.is_empty() {
            store.datastore_endpoint = self.datastore_endpoint.clone();
        }
        if self.token.is_some() {
            store.token.clone_from(&self.token);
        }
        for (flag, setting) in [
            (&self.datastore_cafile, &mut store.datastore_cafile),
            (&self.datastore_certfile, &mut store.datastore_certfile),
            (&self.datastore_keyfile, &mut store.datastore_keyfile),
        ] {
            if flag.is_some() {
                setting.clone_from(flag);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_config_file_and_absent_flags_keep_it() {
        let mut store = StoreConfig {
            datastore_cafile: Some(PathBuf::from("/from/file/ca.pem")),
            datastore_keyfile: Some(PathBuf::from("/from/file/key.pem")),
            ..StoreConfig::default()
        };
        let args = DatastoreArgs {
            datastore_endpoint: vec!["https://a:2379".into(), "https://b:2379".into()],
            datastore_keyfile: Some(PathBuf::from("/flag/key.pem")),
            ..DatastoreArgs::default()
        };
        args.apply(&mut store);
        assert_eq!(
            store.datastore_endpoint,
            ["https://a:2379", "https://b:2379"]
        );
        assert_eq!(
            store.datastore_cafile.unwrap(),
            PathBuf::from("/from/file/ca.pem")
        );
        assert_eq!(
            store.datastore_keyfile.unwrap(),
            PathBuf::from("/flag/key.pem")
        );
    }
}
