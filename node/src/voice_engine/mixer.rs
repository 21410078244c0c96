//! Mixing: every remote speaker's frame summed with saturation. The local participant is
//! never mixed in (no self-echo), and a deafened listener hears nothing.

use concord_proto::Id;

use super::{FRAME, Frame};

/// Sums the frames of every speaker except `me`.
pub fn mix<'a>(me: Id, frames: impl IntoIterator<Item = (Id, &'a [i16])>) -> Frame {
    let mut out = vec![0i32; FRAME];
    for (who, frame) in frames {
        if who == me {
            continue;
        }
        for (acc, &s) in out.iter_mut().zip(frame) {
            *acc += i32::from(s);
        }
    }
    out.into_iter()
        .map(|s| s.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn others_are_summed_with_saturation_and_self_is_left_out() {
        let a = vec![20_000i16; FRAME];
        let b = vec![20_000i16; FRAME];
        let me = vec![1_000i16; FRAME];
        let out = mix(Id(1), [(Id(2), &a[..]), (Id(3), &b[..]), (Id(1), &me[..])]);
        assert!(out.iter().all(|&s| s == i16::MAX));
        let out = mix(Id(1), [(Id(1), &me[..])]);
        assert!(out.iter().all(|&s| s == 0));
    }
}
