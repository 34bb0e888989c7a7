import Tokenizer

/// Where a sequence is copying earlier text from, and what it renames while it copies. An
/// edit of a text the prompt quotes (rename a function, change a word) writes the text out
/// again with the same words replaced wherever they recur, and in tokens those recur in many
/// shapes: `userId` is one token after a space and two after a parenthesis once it is
/// `accountId`. So the track learns renames as text, once the copy resumes after an edit,
/// and drafts the source with them applied and encoded again: only the first occurrence of
/// an edit costs passes.
struct CopyTrack {
    /// A word written in place of another.
    struct Rename: Equatable {
        var old: [UInt8]
        var new: [UInt8]
    }

    let tokenizer: Tokenizer
    /// Tokens followed so far: the prompt is only ever a source.
    private var followed: Int
    /// While copying, the index of the next source token to copy.
    private var source: Int?
    /// The rest of a renamed run of source tokens under way, which comes before `source`,
    /// and where that run began in the source and in the output.
    private var pending: ArraySlice<Int> = []
    private var pendingStart = (source: 0, output: 0)
    /// Where the copy last left its source: the index of the source token that was not
    /// copied, and of the first token written instead.
    private var departure: (source: Int, output: Int)?
    /// Tokens copied in a row since the copy was found.
    private var copiedInARow = 0
    /// Whether the copy has run `shortestCopy` tokens in a row since it was found: only then
    /// does the track draft, and a departure count as an edit to resume after.
    private var established = false
    /// Renames learned, the latest last.
    private(set) var renames: [Rename] = []

    /// Longest suffix looked up to find a source, and shortest.
    let maxMatch: Int, minMatch: Int
    /// Most source tokens an edit spans, and most tokens of a renamed run.
    static let longestEdit = 8
    /// Output tokens after a departure past which the copy is taken as ended.
    static let longestDeparture = 16
    /// Tokens a copy runs in a row before the track follows it: shorter copies are the
    /// chance repeats of free text, which end rather than resume, and where the suffix
    /// lookup drafts (with branches, if asked).
    static let shortestCopy = 8
    /// Most tokens followed in one call: past it (a sequence resumed with its output, or
    /// long unproposed), the track starts over at the last token, keeping its renames,
    /// rather than look the suffix up at every token.
    static let longestCatchUp = 64
    /// Most renames kept.
    static let mostRenames = 16
    /// Most tokens written after a departure for which the draft still guesses a word for
    /// a word.
    static let longestGuess = 4

    init(tokenizer: Tokenizer, promptCount: Int, maxMatch: Int, minMatch: Int) {
        self.tokenizer = tokenizer
        followed = promptCount
        self.maxMatch = maxMatch
        self.minMatch = minMatch
    }

    /// Follows the tokens after the last followed, through the last of `t`.
    mutating func follow(_ t: UnsafeBufferPointer<Int>) {
        if t.count - followed > Self.longestCatchUp {
            (source, pending, departure, copiedInARow, established) = (nil, [], nil, 0, false)
            followed = t.count - 1
        }
        while followed < t.count {
            step(t, at: followed)
            followed += 1
        }
    }

    /// The tokens the copy continues with, renames applied, up to `limit`; after a departure,
    /// from where the copy most likely resumes (`resumption`); empty where no copy is followed.
    func draft(_ t: UnsafeBufferPointer<Int>, limit: Int) -> [Int] {
        guard established, limit > 0 else { return [] }
        var start: Int
        var tokens: [Int] = []
        if let source {
            start = source
            tokens = Array(pending.prefix(limit))
        } else if let departure, let resumed = resumption(t, after: departure) {
            start = resumed
        } else {
            return []
        }
        while tokens.count < limit && start < t.count {
            if let unit = renamed(t, at: start, before: t.count) {
                tokens += unit.tokens
                start = unit.next
            } else {
                tokens.append(t[start])
                start += 1
            }
        }
        return Array(tokens.prefix(limit))
    }

    private mutating func step(_ t: UnsafeBufferPointer<Int>, at k: Int) {
        let token = t[k]
        if let s = source {
            if let next = pending.first {
                if token == next { pending.removeFirst(); copied(); return }
                pending = []
                depart(source: pendingStart.source, output: pendingStart.output)
                return
            }
            if let unit = renamed(t, at: s, before: k) {
                if token == unit.tokens[0] {
                    pending = unit.tokens.dropFirst()
                    pendingStart = (s, k)
                    source = unit.next
                    copied()
                    return
                }
                if token == t[s] {
                    renames.removeAll { $0 == unit.rename }  // copied unchanged here: not a rename
                    source = s + 1
                    copied()
                    return
                }
            } else if token == t[s] {
                source = s + 1
                copied()
                return
            }
            depart(source: s, output: k)
            return
        }
        if let d = departure {
            if resume(t, at: k, after: d) { return }
            if k + 1 - d.output < Self.longestDeparture { return }
            departure = nil
        }
        source = latestOccurrence(t, ofSuffixEndingAt: k)
        (copiedInARow, established) = (0, false)
    }

    private mutating func copied() {
        copiedInARow += 1
        if copiedInARow >= Self.shortestCopy { established = true }
    }

    /// A departure from a copy not yet established ends it.
    private mutating func depart(source s: Int, output k: Int) {
        source = nil
        departure = established ? (s, k) : nil
    }

    /// After a departure, the copy resumes where the last two tokens follow each other in
    /// the source, or after a source token that the last token ends but is not (`Id` ends
    /// `(userId`, written `(account` `Id` once renamed), at most `longestEdit` tokens past
    /// the one not copied. What was skipped there and what was written instead are learned
    /// as renames.
    private mutating func resume(_ t: UnsafeBufferPointer<Int>, at k: Int, after d: (source: Int, output: Int)) -> Bool {
        let tail = tokenizer.bytes(of: t[k])
        for j in d.source..<min(d.source + Self.longestEdit, d.output) {
            var skipped: Range<Int>, written: Range<Int>
            if j > d.source, k - 1 >= d.output, t[j - 1] == t[k - 1], t[j] == t[k] {
                (skipped, written) = (d.source..<(j - 1), d.output..<(k - 1))
            } else if tail.count >= 2, t[j] != t[k], Self.ends(tokenizer.bytes(of: t[j]), with: tail) {
                (skipped, written) = (d.source..<(j + 1), d.output..<(k + 1))
            } else {
                continue
            }
            if written.count <= Self.longestEdit { learn(old: text(t, skipped), new: text(t, written)) }
            departure = nil
            source = j + 1
            return true
        }
        return false
    }

    /// Renames from one edit, where both texts are the same words and separators but for
    /// some words: each differing word is a rename (`fetchUser(userId` → `loadAccount(accountId`
    /// renames two words, which recur apart). Other edits (a phrase rewritten, a line added)
    /// are not repeated elsewhere as they are.
    private mutating func learn(old: [UInt8], new: [UInt8]) {
        guard !old.isEmpty, !new.isEmpty else { return }
        let a = Self.words(old), b = Self.words(new)
        guard a.count == b.count, zip(a, b).allSatisfy({ $0 == $1 || (Self.isWordByte($0.first!) && Self.isWordByte($1.first!)) }) else { return }
        for (o, n) in zip(a, b) where o != n {
            renames.removeAll { $0.old.elementsEqual(o) }
            renames.append(Rename(old: Array(o), new: Array(n)))
        }
        if renames.count > Self.mostRenames { renames.removeFirst(renames.count - Self.mostRenames) }
    }

    /// Where, after departure `d`, the copy most likely resumes: after the source token that
    /// the last token is, or ends as (`Id` ends `(userId`), within `longestEdit` tokens of the
    /// one not copied; else after as many source tokens as were written since (a word for a
    /// word), up to `longestGuess`.
    private func resumption(_ t: UnsafeBufferPointer<Int>, after d: (source: Int, output: Int)) -> Int? {
        let written = t.count - d.output, last = t[t.count - 1]
        let tail = tokenizer.bytes(of: last)
        for j in d.source..<min(d.source + Self.longestEdit, d.output) {
            if t[j] == last || (tail.count >= 2 && Self.ends(tokenizer.bytes(of: t[j]), with: tail)) { return j + 1 }
        }
        return written <= Self.longestGuess ? d.source + written : nil
    }

    /// The source tokens from `i` (within `t[..<end]`) that a rename starting in token `i`
    /// covers, as the rename makes them, and the index after them; the rename whose text
    /// starts first, the longest of those. A rename starts a word (`userId` in `(userId`),
    /// and one of under four bytes also ends one (`i` is not renamed inside `in`). Nil where
    /// the renamed text does not encode back to itself (a character split between tokens).
    private func renamed(_ t: UnsafeBufferPointer<Int>, at i: Int, before end: Int) -> (tokens: [Int], next: Int, rename: Rename)? {
        guard !renames.isEmpty, i < end else { return nil }
        var bytes: [UInt8] = [], ends: [Int] = []  // ends[n]: where token i + n ends in `bytes`
        for n in i..<min(i + Self.longestEdit, end) {
            bytes += tokenizer.bytes(of: t[n])
            ends.append(bytes.count)
        }
        let before = i > 0 ? tokenizer.bytes(of: t[i - 1]).last : nil
        var best: (start: Int, rename: Rename)?
        for r in renames {
            guard let start = Self.firstWord(r.old, in: bytes, after: before), start < ends[0] else { continue }
            if let b = best, start > b.start || (start == b.start && r.old.count <= b.rename.old.count) { continue }
            best = (start, r)
        }
        guard let best, let last = ends.firstIndex(where: { $0 >= best.start + best.rename.old.count }) else { return nil }
        let text = Array(bytes[..<best.start] + best.rename.new + bytes[(best.start + best.rename.old.count)..<ends[last]])
        let tokens = tokenizer.encode(String(decoding: text, as: UTF8.self), parseSpecial: false, addSpecial: false, continuing: true)
        guard !tokens.isEmpty, tokens.flatMap({ tokenizer.bytes(of: $0) }) == text else { return nil }
        return (tokens, i + last + 1, best.rename)
    }

    private func text(_ t: UnsafeBufferPointer<Int>, _ range: Range<Int>) -> [UInt8] {
        range.flatMap { tokenizer.bytes(of: t[$0]) }
    }

    /// Runs of word bytes (letters, digits, `_`, anything not ASCII) and of other bytes.
    private static func words(_ bytes: [UInt8]) -> [ArraySlice<UInt8>] {
        guard !bytes.isEmpty else { return [] }
        var runs: [ArraySlice<UInt8>] = [], start = 0
        for i in 1...bytes.count where i == bytes.count || isWordByte(bytes[i]) != isWordByte(bytes[i - 1]) {
            runs.append(bytes[start..<i])
            start = i
        }
        return runs
    }

    private static func isWordByte(_ b: UInt8) -> Bool {
        b >= 0x80 || b == UInt8(ascii: "_") || (b >= 0x30 && b <= 0x39) || ((b | 0x20) >= 0x61 && (b | 0x20) <= 0x7A)
    }

    private static func ends(_ bytes: [UInt8], with tail: [UInt8]) -> Bool {
        bytes.count >= tail.count && bytes[(bytes.count - tail.count)...].elementsEqual(tail)
    }

    /// The first offset of `word` in `haystack` that starts a word (`before`: the byte
    /// before the haystack, if any) and, for a word of under four bytes, ends one.
    private static func firstWord(_ word: [UInt8], in haystack: [UInt8], after before: UInt8?) -> Int? {
        guard !word.isEmpty, word.count <= haystack.count else { return nil }
        for start in 0...(haystack.count - word.count) where haystack[start] == word[0] {
            guard haystack[start..<(start + word.count)].elementsEqual(word) else { continue }
            let previous = start > 0 ? haystack[start - 1] : before
            if let previous, isWordByte(previous) { continue }
            let end = start + word.count
            if word.count < 4, end < haystack.count, isWordByte(haystack[end]) { continue }
            return start
        }
        return nil
    }

    /// The index after the most recent earlier occurrence of the longest suffix of
    /// `t[...k]` between `minMatch` and `maxMatch` tokens, nil where none occurs.
    private func latestOccurrence(_ t: UnsafeBufferPointer<Int>, ofSuffixEndingAt k: Int) -> Int? {
        for n in stride(from: min(maxMatch, k), through: minMatch, by: -1) {
            var end = k  // the occurrence is t[end - n ..< end]
            while end >= n {
                var i = 0
                while i < n && t[end - 1 - i] == t[k - i] { i += 1 }
                if i == n { return end }
                end -= 1
            }
        }
        return nil
    }
}
