//! Certificates and keys for a test control plane: one CA signs the API server's
//! serving certificate and the client certificates the components log in with.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its PKCS#8 private key (PEM).
    pub key: PathBuf,
}

/// Every file the control plane components read, written under one directory.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA that signs everything below; API clients trust it.
    pub ca: CertFiles,
    /// kube-apiserver's serving certificate, valid for 127.0.0.1 and localhost.
    pub apiserver: CertFiles,
    /// Client certificate for the test user (group `system:masters`: cluster admin).
    pub admin: CertFiles,
    /// Client certificate for kube-controller-manager.
    pub controller_manager: CertFiles,
    /// Private key that signs service-account tokens.
    pub service_account_key: PathBuf,
    /// Its public half, which verifies them.
    pub service_account_public_key: PathBuf,
}

/// The identity a client certificate carries: user name (CN) and group (O).
struct Identity<'a> {
    user: &'a str,
    group: &'a str,
}

impl Pki {
    /// Generates fresh keys and certificates into `dir`.
    pub fn generate(dir: &Path) -> Pki {
        let ca_key = KeyPair::generate().expect("generate CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "larder-test-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
        let ca = write_pair(dir, "ca", &ca_cert.pem(), &ca_key);
        let issuer = Issuer::new(ca_params, ca_key);

        let apiserver = serving_cert(dir, &issuer);
        // system:masters is bound to cluster-admin by the API server's bootstrap RBAC policy.
        let admin = client_cert(
            dir,
            "admin",
            &issuer,
            Identity {
                user: "larder-test-admin",
                group: "system:masters",
            },
        );
        // Admin rights spare the controller manager per-controller service accounts:
        // the tests exercise controllers, not the controller manager's own RBAC.
        let controller_manager = client_cert(
            dir,
            "kube-controller-manager",
            &issuer,
            Identity {
                user: "system:kube-controller-manager",
                group: "system:masters",
            },
        );

        let sa_key = KeyPair::generate().expect("generate service-account key");
        let service_account_key = dir.join("service-account.key");
        write(&service_account_key, &sa_key.serialize_pem());
        let service_account_public_key = dir.join("service-account.pub");
        write(&service_account_public_key, &sa_key.public_key_pem());

        Pki {
            ca,
            apiserver,
            admin,
            controller_manager,
            service_account_key,
            service_account_public_key,
        }
    }
}

fn serving_cert(dir: &Path, issuer: &Issuer<'_, KeyPair>) -> CertFiles {
    let key = KeyPair::generate().expect("generate apiserver key");
    // In-cluster names too, so the certificate stays valid for clients that use them.
    let names = [
        "127.0.0.1",
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ];
    let mut params = CertificateParams::new(names.map(String::from).to_vec()).expect("SANs");
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, issuer).expect("sign apiserver cert");
    write_pair(dir, "apiserver", &cert.pem(), &key)
}

fn client_cert(
    dir: &Path,
    name: &str,
    issuer: &Issuer<'_, KeyPair>,
    identity: Identity<'_>,
) -> CertFiles {
    let key = KeyPair::generate().expect("generate client key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
    params
        .distinguished_name
        .push(DnType::CommonName, identity.user);
    // Kubernetes reads groups from Organization attributes (rcgen writes one).
    params
        .distinguished_name
        .push(DnType::OrganizationName, identity.group);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer).expect("sign client cert");
    write_pair(dir, name, &cert.pem(), &key)
}

fn write_pair(dir: &Path, name: &str, cert_pem: &str, key: &KeyPair) -> CertFiles {
    let files = CertFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    write(&files.cert, cert_pem);
    write(&files.key, &key.serialize_pem());
    files
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
