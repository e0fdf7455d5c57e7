//! The forgiving cursor every target reads its input with: past the end, bytes read as zero.

/// Reads an input front to back; past the end every read gives zeros.
pub(super) struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub(super) fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub(super) fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    pub(super) fn u64(&mut self, bytes: usize) -> u64 {
        (0..bytes).fold(0, |acc, i| acc | u64::from(self.byte()) << (8 * i))
    }

    pub(super) fn text(&mut self, max: usize) -> String {
        let n = usize::from(self.byte()) % (max + 1);
        String::from_utf8_lossy(self.take(n)).into_owned()
    }
}
