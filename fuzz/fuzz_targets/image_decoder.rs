//! Feeds arbitrary bytes to the image decoder. It must never panic, never
//! allocate what a header merely claims, and never go on after End or after
//! an error.
//!
//! Run with `cargo +nightly fuzz run image_decoder` from the repository root.
#![no_main]

use herd_image::{ImageReader, Section};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = ImageReader::new(data) else {
        return;
    };
    let mut page_bytes = 0u64;
    loop {
        match reader.next_section() {
            Ok(Some(Section::Process(_))) => {}
            Ok(Some(Section::Pages { data, .. })) => page_bytes += data.len() as u64,
            Ok(Some(Section::End { page_bytes: total })) => {
                assert_eq!(total, page_bytes, "End accepted with a total other than the pages read");
                assert!(matches!(reader.next_section(), Ok(None)), "a section after End");
                break;
            }
            Ok(None) => unreachable!("None before End"),
            Err(_) => {
                assert!(reader.next_section().is_err(), "the reader went on after an error");
                break;
            }
        }
        assert!(reader.offset() <= data.len() as u64);
    }
});
