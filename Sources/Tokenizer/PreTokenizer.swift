/// Splits text into the words that BPE merges never cross, by hand-written equivalents of
/// the regular expressions llama.cpp uses for each `tokenizer.ggml.pre` value.
public enum PreTokenizer: Sendable, Equatable {
    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    /// With `splitDigits`, every digit is first made a piece of its own (`\p{N}`), as for
    /// SmolLM and StarCoder.
    case gpt2(splitDigits: Bool)
    /// Llama 3: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,maxDigits}|
    /// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`. Qwen2 uses `maxDigits` 1.
    case llama3(maxDigits: Int)

    /// The pre-tokenizer for a `tokenizer.ggml.pre` name, or nil if unknown.
    public init?(name: String) {
        switch name {
        case "default", "gpt2", "gpt-2", "mpt", "olmo", "jais": self = .gpt2(splitDigits: false)
        case "smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva": self = .gpt2(splitDigits: true)
        case "llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral", "dbrx", "smaug-bpe": self = .llama3(maxDigits: 3)
        case "qwen2", "stablelm2", "deepseek-r1-qwen", "megrez": self = .llama3(maxDigits: 1)
        default: return nil
        }
    }

    /// The words of `text`, in order; concatenated they give `text` back.
    public func split(_ text: String) -> [String] {
        let scalars = Array(text.unicodeScalars)
        var ranges: [Range<Int>] = []
        switch self {
        case .gpt2(let splitDigits):
            if splitDigits {
                var start = 0
                for i in scalars.indices where isNumber(scalars[i]) {
                    if start < i { Self.gpt2(scalars, start..<i, into: &ranges) }
                    ranges.append(i..<(i + 1))
                    start = i + 1
                }
                if start < scalars.count { Self.gpt2(scalars, start..<scalars.count, into: &ranges) }
            } else {
                Self.gpt2(scalars, 0..<scalars.count, into: &ranges)
            }
        case .llama3(let maxDigits):
            Self.llama3(scalars, maxDigits: maxDigits, into: &ranges)
        }
        return ranges.map { r in
            var view = String.UnicodeScalarView()
            view.append(contentsOf: scalars[r])
            return String(view)
        }
    }

    private static func gpt2(_ s: [Unicode.Scalar], _ piece: Range<Int>, into out: inout [Range<Int>]) {
        let end = piece.upperBound
        func at(_ i: Int) -> Unicode.Scalar? { i < end ? s[i] : nil }
        var i = piece.lowerBound
        while i < end {
            let c = s[i]
            // 's 't 're 've 'm 'll 'd
            if c == "'", let n = at(i + 1) {
                if "stmd".unicodeScalars.contains(n) { out.append(i..<(i + 2)); i += 2; continue }
                if let n2 = at(i + 2), (n == "r" && n2 == "e") || (n == "v" && n2 == "e") || (n == "l" && n2 == "l") {
                    out.append(i..<(i + 3)); i += 3; continue
                }
            }
            let next = at(i + 1)
            let spaced = c == " " ? 1 : 0
            let head = spaced == 1 ? next : c
            if let h = head {
                let run: ((Unicode.Scalar) -> Bool)?
                if isLetter(h) { run = isLetter } else if isNumber(h) { run = isNumber } else if !isSpace(h) && !isLetter(h) && !isNumber(h) {
                    run = { !isSpace($0) && !isLetter($0) && !isNumber($0) }
                } else { run = nil }
                if let run {
                    var j = i + spaced
                    while j < end, run(s[j]) { j += 1 }
                    out.append(i..<j); i = j; continue
                }
            }
            // \s+(?!\S) then \s+
            var j = i
            while j < end, isSpace(s[j]) { j += 1 }
            if j < end, j - i > 1 { j -= 1 }
            out.append(i..<j); i = j
        }
    }

    private static func llama3(_ s: [Unicode.Scalar], maxDigits: Int, into out: inout [Range<Int>]) {
        let end = s.count
        func at(_ i: Int) -> Unicode.Scalar? { i < end ? s[i] : nil }
        func lower(_ c: Unicode.Scalar?) -> Unicode.Scalar? { c.map { $0.properties.lowercaseMapping.unicodeScalars.first ?? $0 } }
        var i = 0
        while i < end {
            let c = s[i]
            if c == "'", let n = lower(at(i + 1)) {
                if "stmd".unicodeScalars.contains(n) { out.append(i..<(i + 2)); i += 2; continue }
                if let n2 = lower(at(i + 2)), (n == "r" && n2 == "e") || (n == "v" && n2 == "e") || (n == "l" && n2 == "l") {
                    out.append(i..<(i + 3)); i += 3; continue
                }
            }
            // [^\r\n\p{L}\p{N}]?\p{L}+
            if isLetter(c) || (c != "\r" && c != "\n" && !isNumber(c) && at(i + 1).map(isLetter) == true) {
                var j = i + 1
                while j < end, isLetter(s[j]) { j += 1 }
                out.append(i..<j); i = j; continue
            }
            // \p{N}{1,maxDigits}
            if isNumber(c) {
                var j = i + 1
                while j < end, j - i < maxDigits, isNumber(s[j]) { j += 1 }
                out.append(i..<j); i = j; continue
            }
            // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
            let symbolStart = c == " " ? i + 1 : i
            if let h = at(symbolStart), !isSpace(h), !isLetter(h), !isNumber(h) {
                var j = symbolStart
                while j < end, !isSpace(s[j]), !isLetter(s[j]), !isNumber(s[j]) { j += 1 }
                while j < end, s[j] == "\r" || s[j] == "\n" { j += 1 }
                out.append(i..<j); i = j; continue
            }
            // \s*[\r\n]+ : the longest whitespace run prefix that ends in a newline
            var j = i
            var lastNewline = -1
            while j < end, isSpace(s[j]) {
                if s[j] == "\r" || s[j] == "\n" { lastNewline = j }
                j += 1
            }
            if lastNewline >= 0 { out.append(i..<(lastNewline + 1)); i = lastNewline + 1; continue }
            // \s+(?!\S) then \s+
            if j < end, j - i > 1 { j -= 1 }
            out.append(i..<j); i = j
        }
    }
}

@inline(__always) func isLetter(_ c: Unicode.Scalar) -> Bool {
    if c.isASCII { return (c.value | 0x20) >= 0x61 && (c.value | 0x20) <= 0x7A }
    switch c.properties.generalCategory {
    case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
    default: return false
    }
}

@inline(__always) func isNumber(_ c: Unicode.Scalar) -> Bool {
    if c.isASCII { return c.value >= 0x30 && c.value <= 0x39 }
    switch c.properties.generalCategory {
    case .decimalNumber, .letterNumber, .otherNumber: return true
    default: return false
    }
}

@inline(__always) func isSpace(_ c: Unicode.Scalar) -> Bool {
    if c.isASCII { return c == " " || (c.value >= 9 && c.value <= 13) }
    return c.properties.isWhitespace
}
