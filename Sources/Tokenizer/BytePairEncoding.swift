import GGUF

/// Byte-level BPE (Sennrich et al. 2016; GPT-2's byte-level variant): a word's bytes become
/// characters of the byte-level alphabet, then the pair with the lowest merge rank is
/// merged until no listed pair remains.
struct BytePairEncoding: SubwordModel {
    struct Merge: Sendable { let rank: Int32; let result: Int32 }

    let vocabulary: Vocabulary
    /// (left id, right id) packed in 64 bits → rank and merged id.
    let merges: [UInt64: Merge]
    let preTokenizer: PreTokenizer
    /// Llama 3 tokenizers look a whole word up before merging (`ignore_merges`).
    let wholeWordsFirst: Bool
    /// The id of each byte's byte-level character, -1 where the vocabulary lacks it.
    let byteSymbols: [Int32]

    init(vocabulary: Vocabulary, metadata m: GGUFMetadata) throws {
        self.vocabulary = vocabulary
        let name = try m.optionalString("tokenizer.ggml.pre") ?? "default"
        guard let pre = PreTokenizer(name: name) else {
            throw GGUFError(field: "tokenizer.ggml.pre", "pre-tokenizer '\(name)' is not supported")
        }
        preTokenizer = pre
        if case .llama3(maxDigits: 3) = pre { wholeWordsFirst = true } else { wholeWordsFirst = false }
        guard let values = try Vocabulary.array("tokenizer.ggml.merges", of: [.string], in: m) else {
            throw GGUFError(field: "tokenizer.ggml.merges", "missing")
        }
        let list = values.map { $0.stringValue ?? "" }
        var table: [UInt64: Merge] = [:]
        table.reserveCapacity(list.count)
        for (rank, merge) in list.enumerated() {
            // Split at the first space after the first character, as llama.cpp does.
            let utf8 = Array(merge.utf8)
            guard utf8.count >= 3, let space = utf8[1...].firstIndex(of: 0x20) else {
                throw GGUFError(field: "tokenizer.ggml.merges", "entry \(rank) '\(merge)' is not two tokens separated by a space")
            }
            let left = String(decoding: utf8[..<space], as: UTF8.self)
            let right = String(decoding: utf8[(space + 1)...], as: UTF8.self)
            guard let l = vocabulary.id(of: left), let r = vocabulary.id(of: right), let result = vocabulary.id(of: left + right) else { continue }
            let key = UInt64(l) << 32 | UInt64(r)
            if table[key] == nil { table[key] = Merge(rank: Int32(rank), result: Int32(result)) }
        }
        merges = table
        byteSymbols = ByteLevel.byteToScalar.map { Int32(vocabulary.id(of: String($0)) ?? -1) }
    }

    func encode(_ text: String, afterSpecial: Bool, into out: inout [Int]) {
        for word in preTokenizer.split(text) { encodeWord(word, into: &out) }
    }

    func bytes(ofPiece text: String) -> [UInt8] { ByteLevel.decode(text) }

    private func encodeWord(_ word: String, into out: inout [Int]) {
        if wholeWordsFirst, let id = vocabulary.id(of: ByteLevel.encode(word.utf8)) {
            out.append(id)
            return
        }
        guard !word.isEmpty else { return }
        // Symbols are token ids, one per byte's byte-level character; a character missing
        // from the vocabulary is -1 and never merges.
        var symbols: [Int32] = word.utf8.map { byteSymbols[Int($0)] }
        var next = Array(1...symbols.count)
        var prev = Array(-1..<(symbols.count - 1))
        var alive = [Bool](repeating: true, count: symbols.count)

        struct Candidate: Comparable {
            let rank: Int32, left: Int, leftId: Int32, rightId: Int32
            static func < (a: Candidate, b: Candidate) -> Bool { a.rank != b.rank ? a.rank < b.rank : a.left < b.left }
        }
        var heap = MinHeap<Candidate>()
        func consider(_ left: Int) {
            let right = next[left]
            guard left >= 0, right < symbols.count, symbols[left] >= 0, symbols[right] >= 0 else { return }
            if let m = merges[UInt64(UInt32(symbols[left])) << 32 | UInt64(UInt32(symbols[right]))] {
                heap.push(Candidate(rank: m.rank, left: left, leftId: symbols[left], rightId: symbols[right]))
            }
        }
        for i in 0..<(symbols.count - 1) { consider(i) }
        while let c = heap.pop() {
            let right = next[c.left]
            // Skip candidates made stale by an earlier merge.
            guard alive[c.left], right < symbols.count, symbols[c.left] == c.leftId, symbols[right] == c.rightId else { continue }
            let key = UInt64(UInt32(c.leftId)) << 32 | UInt64(UInt32(c.rightId))
            symbols[c.left] = merges[key]!.result
            alive[right] = false
            next[c.left] = next[right]
            if next[right] < symbols.count { prev[next[right]] = c.left }
            if prev[c.left] >= 0 { consider(prev[c.left]) }
            consider(c.left)
        }
        var i = 0
        while i < symbols.count {
            if symbols[i] >= 0 {
                out.append(Int(symbols[i]))
            } else if let unk = vocabulary.unknown {
                out.append(unk)
            }
            i = next[i]
        }
    }
}

/// A binary min-heap.
struct MinHeap<Element: Comparable> {
    private var items: [Element] = []

    mutating func push(_ e: Element) {
        items.append(e)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard items[i] < items[parent] else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> Element? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var smallest = i
            if l < items.count, items[l] < items[smallest] { smallest = l }
            if r < items.count, items[r] < items[smallest] { smallest = r }
            if smallest == i { break }
            items.swapAt(i, smallest)
            i = smallest
        }
        return top
    }
}
