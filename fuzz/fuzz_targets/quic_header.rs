//! `fulcrum_balance::quic` on arbitrary datagrams: parsing never panics, what it returns
//! lies inside the datagram where the header says, and a QUIC-LB server ID is exactly the
//! configured bytes after the first octet. The first input byte picks the configuration
//! (server ID length, config ID, nonce length); the rest is the datagram.
#![no_main]

use fulcrum_balance::quic::{self, Header, MAX_CID_LEN_V1, PlaintextConfig, QUIC_V1, QUIC_V2};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, datagram)) = data.split_first() else {
        return;
    };
    let cfg = PlaintextConfig {
        config_id: pick >> 5,
        server_id_len: 1 + usize::from(pick & 0x0f) % 15,
        nonce_len: 4 + usize::from(pick >> 4 & 1) * 4,
    };
    let Ok(header) = quic::parse(datagram, cfg.cid_len()) else {
        return;
    };
    match header {
        Header::Short { dcid } => {
            assert_eq!(datagram[0] & 0x80, 0);
            assert!(dcid.len() <= cfg.cid_len());
            assert_eq!(dcid, &datagram[1..1 + dcid.len()]);
        }
        Header::Long {
            version,
            dcid,
            scid,
            ..
        } => {
            assert_eq!(datagram[0] & 0x80, 0x80);
            assert_eq!(version.to_be_bytes(), datagram[1..5]);
            assert_eq!(usize::from(datagram[5]), dcid.len());
            assert_eq!(dcid, &datagram[6..6 + dcid.len()]);
            assert_eq!(usize::from(datagram[6 + dcid.len()]), scid.len());
            if matches!(version, QUIC_V1 | QUIC_V2) {
                assert!(dcid.len() <= MAX_CID_LEN_V1 && scid.len() <= MAX_CID_LEN_V1);
            }
        }
    }
    let dcid = header.dcid();
    if let Some(sid) = cfg.server_id(dcid) {
        assert_eq!(sid.len(), cfg.server_id_len);
        assert_eq!(sid, &dcid[1..=cfg.server_id_len]);
        assert_eq!(dcid[0] >> 5, cfg.config_id);
        assert!(cfg.config_id != quic::UNROUTABLE_CONFIG_ID);
    }
});
