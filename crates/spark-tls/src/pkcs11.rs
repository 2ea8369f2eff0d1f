//! A device key held in a PKCS#11 token (being written by the uplinkd work).
