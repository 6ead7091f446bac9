//! Kubeconfig files for the test control plane (JSON, which every kubeconfig reader accepts).

use std::path::Path;

use super::pki::CertFiles;

/// The single context name every generated kubeconfig uses.
pub const CONTEXT: &str = "larder-test";

/// A kubeconfig that reaches `server`, trusting `ca` and logging in with `client`.
pub fn render(server: &str, ca: &Path, client: &CertFiles, user: &str) -> String {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": CONTEXT,
            "cluster": { "server": server, "certificate-authority": ca },
        }],
        "users": [{
            "name": user,
            "user": { "client-certificate": client.cert, "client-key": client.key },
        }],
        "contexts": [{
            "name": CONTEXT,
            "context": { "cluster": CONTEXT, "user": user },
        }],
        "current-context": CONTEXT,
    });
    serde_json::to_string_pretty(&config).expect("a JSON value always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn kubeconfig_names_server_ca_and_client_files() {
        let client = CertFiles {
            cert: PathBuf::from("/pki/admin.crt"),
            key: PathBuf::from("/pki/admin.key"),
        };
        let text = render(
            "https://127.0.0.1:6443",
            Path::new("/pki/ca.crt"),
            &client,
            "admin",
        );
        let parsed: kube::config::Kubeconfig = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some(CONTEXT));
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(
            cluster.certificate_authority.as_deref(),
            Some("/pki/ca.crt")
        );
        let auth = parsed.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(auth.client_certificate.as_deref(), Some("/pki/admin.crt"));
        assert_eq!(auth.client_key.as_deref(), Some("/pki/admin.key"));
        let context = parsed.contexts[0].context.as_ref().unwrap();
        assert_eq!(context.user.as_deref(), Some("admin"));
    }
}
