//! Consistent hashing is fixed across releases: the same member ids and the same client
//! addresses give the same member, whatever version of fulcrum serves them, so an upgrade does
//! not move sticky clients. These values were recorded once; a change to `hash_ip`,
//! `hash_bytes`, `mix64` or the Maglev build that moves any client fails here. Change them
//! only on purpose, and say so in the release notes.

use fulcrum_balance::{Candidate, Maglev, hash_bytes, hash_ip};

const MEMBERS: [&str; 4] = [
    "0b3c7a52-6f7e-4d5e-9a1b-2c3d4e5f6a70",
    "1c4d8b63-7a8f-4e6f-8b2c-3d4e5f6a7b81",
    "2d5e9c74-8b9a-4f70-9c3d-4e5f6a7b8c92",
    "3e6fad85-9cab-4081-8d4e-5f6a7b8c9da3",
];

const CLIENTS: [&str; 8] = [
    "10.0.0.1",
    "10.0.0.2",
    "192.168.1.77",
    "172.16.4.9",
    "203.0.113.7",
    "198.51.100.200",
    "2001:db8::1",
    "2001:db8:85a3::8a2e:370:7334",
];

fn picks(members: &[&str]) -> Vec<usize> {
    let candidates: Vec<Candidate> = members
        .iter()
        .map(|id| Candidate::new(1, hash_bytes(id.as_bytes())))
        .collect();
    let table = Maglev::new(&candidates);
    CLIENTS
        .iter()
        .map(|ip| {
            let ip = ip.parse().unwrap_or_else(|_| unreachable!());
            table.select(hash_ip(ip), &|_| true).unwrap_or(usize::MAX)
        })
        .collect()
}

#[test]
fn client_to_member_mapping_is_fixed() {
    assert_eq!(picks(&MEMBERS), [1, 2, 0, 3, 0, 1, 2, 3]);
    let hashes: Vec<u64> = CLIENTS
        .iter()
        .map(|ip| hash_ip(ip.parse().unwrap_or_else(|_| unreachable!())))
        .collect();
    assert_eq!(
        hashes,
        [
            0x5ac0_306c_bfad_cff7,
            0x4e3f_f57b_a650_4878,
            0x9dd8_24b3_e4a9_b93f,
            0x65d7_e557_54f8_de36,
            0x679c_5150_4da2_8f18,
            0x90e1_719e_c77f_202b,
            0x6d92_321f_e8ef_8243,
            0x8f88_8f3f_8ddb_bc9c,
        ]
    );
}

#[test]
fn removing_a_member_moves_only_its_clients_and_order_does_not_matter() {
    // Without the fourth member, its two clients move; nobody else does.
    assert_eq!(picks(&MEMBERS[..3]), [1, 2, 0, 2, 0, 1, 2, 1]);
    // The snapshot's member order is not the table's: the same ids, reversed, pick the same
    // members (by id).
    let reversed: Vec<&str> = MEMBERS.iter().rev().copied().collect();
    let by_id: Vec<&str> = picks(&reversed).into_iter().map(|i| reversed[i]).collect();
    let expected: Vec<&str> = picks(&MEMBERS).into_iter().map(|i| MEMBERS[i]).collect();
    assert_eq!(by_id, expected);
}

#[test]
fn an_empty_pool_has_no_table_and_picks_nothing() {
    let empty = Maglev::new(&[]);
    assert!(empty.is_empty());
    assert_eq!((empty.len(), empty.table_size()), (0, 0));
    assert_eq!(empty.select(hash_ip([10, 0, 0, 1].into()), &|_| true), None);
    let one = Maglev::new(&[Candidate::new(1, hash_bytes(MEMBERS[0].as_bytes()))]);
    assert!(!one.is_empty());
    assert_eq!(one.len(), 1);
    assert_eq!(one.table_size(), Maglev::DEFAULT_TABLE_SIZE);
    assert_eq!(
        one.select(hash_ip([10, 0, 0, 1].into()), &|_| true),
        Some(0)
    );
    assert_eq!(one.select(hash_ip([10, 0, 0, 1].into()), &|_| false), None);
}

/// With almost every member ineligible the pick falls back to rendezvous hashing; that
/// mapping is fixed too (two eligible members of a thousand: most clients get there).
#[test]
fn the_rendezvous_fallback_is_fixed() {
    let ids: Vec<String> = (0..1000).map(|i| format!("member-{i:04}")).collect();
    let candidates: Vec<Candidate> = ids
        .iter()
        .map(|id| Candidate::new(1, hash_bytes(id.as_bytes())))
        .collect();
    let table = Maglev::new(&candidates);
    let eligible = |i: usize| i == 123 || i == 877;
    let picks: Vec<usize> = CLIENTS
        .iter()
        .map(|ip| {
            let ip = ip.parse().unwrap_or_else(|_| unreachable!());
            table.select(hash_ip(ip), &eligible).unwrap_or(usize::MAX)
        })
        .collect();
    assert_eq!(picks, [877, 123, 877, 123, 877, 877, 123, 123]);
}
