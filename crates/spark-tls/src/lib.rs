//! rustls set-up shared by every Spark TLS endpoint: pinned CAs, mutual TLS, client identities from certificates, PKCS#11-held keys (being built; see issue 3).
