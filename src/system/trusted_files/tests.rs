use super::*;

#[test]
fn components_come_out_in_order_without_empty_ones() {
    let mut p = Vec::new();
    push_components(&mut p, b"//etc/./qemu//x.conf");
    let order: Vec<Vec<u8>> = p.into_iter().rev().collect();
    assert_eq!(
        order,
        vec![
            b"etc".to_vec(),
            b".".to_vec(),
            b"qemu".to_vec(),
            b"x.conf".to_vec()
        ]
    );
    // A trailing slash: what comes before it must be a directory.
    let mut p = Vec::new();
    push_components(&mut p, b"/etc/x.conf/");
    assert_eq!(p, vec![b".".to_vec(), b"x.conf".to_vec(), b"etc".to_vec()]);
    let mut p = Vec::new();
    push_components(&mut p, b"/");
    assert!(p.is_empty());
}
