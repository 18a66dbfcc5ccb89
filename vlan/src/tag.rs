//! 802.1Q (C-tag) and 802.1ad (S-tag) tags as they sit in a frame, right after the two MAC
//! addresses: TPID (2 bytes) then TCI (PCP 3 bits, DEI 1 bit, VID 12 bits).

/// Customer tag (802.1Q).
pub const TPID_8021Q: u16 = 0x8100;
/// Service tag (802.1ad, QinQ).
pub const TPID_8021AD: u16 = 0x88a8;
/// Offset of the first tag (or of the EtherType of an untagged frame).
pub const TAG_OFFSET: usize = 12;
/// Length of one tag.
pub const TAG_LEN: usize = 4;

/// One VLAN tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub tpid: u16,
    /// Priority code point, 0-7.
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN identifier, 0-4095 (0: priority tag only).
    pub vid: u16,
}

impl Tag {
    /// A C-tag for `vid` with priority 0.
    pub fn c(vid: u16) -> Tag {
        Tag {
            tpid: TPID_8021Q,
            pcp: 0,
            dei: false,
            vid: vid & 0x0fff,
        }
    }

    /// An S-tag for `vid` with priority 0.
    pub fn s(vid: u16) -> Tag {
        Tag {
            tpid: TPID_8021AD,
            ..Tag::c(vid)
        }
    }

    /// Whether `tpid` introduces a tag this crate understands.
    pub fn is_tpid(tpid: u16) -> bool {
        tpid == TPID_8021Q || tpid == TPID_8021AD
    }

    /// Reads a tag from the first 4 bytes of `b` if they are one (known TPID).
    pub fn parse(b: &[u8]) -> Option<Tag> {
        let tpid = u16::from_be_bytes([*b.first()?, *b.get(1)?]);
        if !Tag::is_tpid(tpid) {
            return None;
        }
        let tci = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
        Some(Tag {
            tpid,
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
            vid: tci & 0x0fff,
        })
    }

    /// The tag's 4 bytes.
    pub fn to_bytes(self) -> [u8; TAG_LEN] {
        let tci =
            (u16::from(self.pcp & 7) << 13) | (u16::from(self.dei) << 12) | (self.vid & 0x0fff);
        let [a, b] = self.tpid.to_be_bytes();
        let [c, d] = tci.to_be_bytes();
        [a, b, c, d]
    }
}

/// The tags at the start of a frame: the outer one and, behind it, an inner one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tags {
    pub outer: Option<Tag>,
    pub inner: Option<Tag>,
}

impl Tags {
    /// How many tags there are (0, 1 or 2): the EtherType of the payload is at
    /// `12 + 4 * count`.
    pub fn count(&self) -> usize {
        usize::from(self.outer.is_some()) + usize::from(self.inner.is_some())
    }

    /// Reads the tags of an Ethernet frame (at least its first 14 bytes). `None` if the frame
    /// is too short to hold its header and tags.
    pub fn of(frame: &[u8]) -> Option<Tags> {
        if frame.len() < TAG_OFFSET + 2 {
            return None;
        }
        let outer = Tag::parse(frame.get(TAG_OFFSET..)?);
        let inner = match outer {
            Some(_) => {
                if frame.len() < TAG_OFFSET + TAG_LEN + 2 {
                    return None;
                }
                Tag::parse(frame.get(TAG_OFFSET + TAG_LEN..)?)
            }
            None => None,
        };
        if inner.is_some() && frame.len() < TAG_OFFSET + 2 * TAG_LEN + 2 {
            return None;
        }
        Some(Tags { outer, inner })
    }
}

/// How a frame is changed on its way out: `strip` bytes of tags removed at offset 12, then
/// an optional tag inserted there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Edit {
    pub strip: usize,
    pub push: Option<Tag>,
}

impl Edit {
    /// Leaves the frame as it is.
    pub const NONE: Edit = Edit {
        strip: 0,
        push: None,
    };

    /// Length of a `len`-byte frame after the edit.
    pub fn len_after(&self, len: usize) -> usize {
        len - self.strip.min(len.saturating_sub(TAG_OFFSET))
            + if self.push.is_some() { TAG_LEN } else { 0 }
    }

    /// Offsets in the frame shift by this much (for checksum starts, header lengths).
    pub fn shift(&self) -> isize {
        (if self.push.is_some() {
            TAG_LEN as isize
        } else {
            0
        }) - self.strip as isize
    }

    /// Appends the edited `frame` to `out`.
    pub fn apply(&self, frame: &[u8], out: &mut Vec<u8>) {
        let cut = TAG_OFFSET.min(frame.len());
        out.extend_from_slice(&frame[..cut]);
        if let Some(t) = self.push {
            out.extend_from_slice(&t.to_bytes());
        }
        out.extend_from_slice(frame.get(cut + self.strip..).unwrap_or(&[]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_round_trips() {
        for t in [
            Tag::c(10),
            Tag::s(300),
            Tag {
                tpid: TPID_8021Q,
                pcp: 7,
                dei: true,
                vid: 4095,
            },
            Tag::c(0),
        ] {
            assert_eq!(Tag::parse(&t.to_bytes()), Some(t));
        }
        assert_eq!(Tag::c(10).to_bytes(), [0x81, 0x00, 0x00, 0x0a]);
        assert_eq!(Tag::parse(&[0x08, 0x00, 0, 10]), None, "IPv4 is not a tag");
        assert_eq!(Tag::parse(&[0x81, 0x00, 0]), None, "too short");
    }

    fn frame(tags: &[Tag]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        for t in tags {
            f.extend_from_slice(&t.to_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
        f
    }

    #[test]
    fn tags_of_frames() {
        assert_eq!(Tags::of(&frame(&[])), Some(Tags::default()));
        assert_eq!(
            Tags::of(&frame(&[Tag::c(5)])),
            Some(Tags {
                outer: Some(Tag::c(5)),
                inner: None
            })
        );
        assert_eq!(
            Tags::of(&frame(&[Tag::s(300), Tag::c(5)])),
            Some(Tags {
                outer: Some(Tag::s(300)),
                inner: Some(Tag::c(5))
            })
        );
        assert_eq!(Tags::of(&[0u8; 13]), None);
        // A tag with nothing behind it is malformed.
        assert_eq!(Tags::of(&frame(&[Tag::c(5)])[..16]), None);
    }

    #[test]
    fn edits_push_and_pop() {
        let plain = frame(&[]);
        let tagged = frame(&[Tag::c(10)]);
        let mut out = Vec::new();
        Edit {
            strip: 0,
            push: Some(Tag::c(10)),
        }
        .apply(&plain, &mut out);
        assert_eq!(out, tagged);
        out.clear();
        Edit {
            strip: 4,
            push: None,
        }
        .apply(&tagged, &mut out);
        assert_eq!(out, plain);
        out.clear();
        // Retag: pop one, push another.
        Edit {
            strip: 4,
            push: Some(Tag::c(20)),
        }
        .apply(&tagged, &mut out);
        assert_eq!(out, frame(&[Tag::c(20)]));
        assert_eq!(
            Edit {
                strip: 4,
                push: None
            }
            .len_after(tagged.len()),
            plain.len()
        );
        assert_eq!(
            Edit {
                strip: 0,
                push: Some(Tag::c(1))
            }
            .shift(),
            4
        );
    }
}
