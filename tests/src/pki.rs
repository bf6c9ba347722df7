//! Certificates for a test control plane: a CA, the API server's serving
//! certificate and an admin client certificate (group `system:masters`).

use std::net::IpAddr;

use anyhow::Result;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM-encoded certificates and keys.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: String,
    pub server_cert: String,
    pub server_key: String,
    pub admin_cert: String,
    pub admin_key: String,
    /// A client certificate for user `ksa-controller`, with no groups: the
    /// controller runs with exactly the RBAC `deploy/` grants that user.
    pub controller_cert: String,
    pub controller_key: String,
    /// A client certificate for user `ksa-signer`, with no groups.
    pub signer_cert: String,
    pub signer_key: String,
    /// The CA's key, for the client certificates of real nodes
    /// ([`Pki::client_cert`]).
    ca_key: String,
}

impl Pki {
    /// Certificates whose serving certificate names loopback, the names of
    /// the `kubernetes` Service, and `addresses`: every API server instance
    /// is dialled by its own address, and shares the certificate.
    pub fn generate(addresses: &[IpAddr]) -> Result<Pki> {
        let ca_key = KeyPair::generate()?;
        let ca = ca_params()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate()?;
        let names = [
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default.svc",
            // The `kubernetes` Service's ClusterIP, the first of
            // `--service-cluster-ip-range`: what pods dial.
            "10.96.0.1",
        ]
        .map(str::to_owned);
        // rcgen makes a string that parses as an IP address an IP SAN.
        let mut server = CertificateParams::new(
            names
                .into_iter()
                .chain(addresses.iter().map(IpAddr::to_string))
                .collect::<Vec<_>>(),
        )?;
        server
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &issuer)?;

        let (admin_cert, admin_key) = client_cert(&issuer, "ksa-admin", &["system:masters"])?;
        let (controller_cert, controller_key) = client_cert(&issuer, "ksa-controller", &[])?;
        let (signer_cert, signer_key) = client_cert(&issuer, "ksa-signer", &[])?;

        Ok(Pki {
            ca_cert: ca_cert.pem(),
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            admin_cert,
            admin_key,
            controller_cert,
            controller_key,
            signer_cert,
            signer_key,
            ca_key: ca_key_pem,
        })
    }

    /// A client certificate (PEM) and its key for `user` in `groups`,
    /// signed by the CA.
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> Result<(String, String)> {
        let issuer = Issuer::new(ca_params()?, KeyPair::from_pem(&self.ca_key)?);
        client_cert(&issuer, user, groups)
    }
}

/// The CA's certificate parameters (its subject names the issuer of every
/// certificate it signs).
fn ca_params() -> Result<CertificateParams> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "ksa-test-ca");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(ca)
}

/// A client certificate (PEM) and its key for user `user`, in `groups`.
fn client_cert(
    issuer: &Issuer<'_, KeyPair>,
    user: &str,
    groups: &[&str],
) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, user);
    for group in groups {
        params
            .distinguished_name
            .push(DnType::OrganizationName, *group);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}
