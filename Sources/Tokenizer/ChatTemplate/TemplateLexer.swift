/// Splits template source into text and tags, applying whitespace control: `{%-`/`-%}`
/// strip on that side, and (as Hugging Face renders chat templates) `trim_blocks` drops
/// the first newline after a block tag and `lstrip_blocks` drops spaces before one.
struct TemplateLexer {
    enum Piece {
        case text(String)
        case output([Token])
        case block([Token])
    }

    enum Token: Equatable {
        case name(String)
        case string(String)
        case int(Int)
        case double(Double)
        case symbol(String)
    }

    static func pieces(_ source: String) throws -> [Piece] {
        let s = Array(source.unicodeScalars)
        var pieces: [Piece] = []
        var text = String.UnicodeScalarView()
        var i = 0
        var trimNextNewline = false
        var stripNextLeading = false
        func flush() {
            if !text.isEmpty { pieces.append(.text(String(text))) }
            text = String.UnicodeScalarView()
        }
        func stripTrailingWhitespace() {
            while let last = text.last, last.properties.isWhitespace { text.removeLast() }
        }
        while i < s.count {
            if stripNextLeading {
                while i < s.count, s[i].properties.isWhitespace { i += 1 }
                stripNextLeading = false
                continue
            }
            if trimNextNewline {
                trimNextNewline = false
                if s[i] == "\n" { i += 1; continue }
            }
            guard s[i] == "{", i + 1 < s.count, ["{", "%", "#"].contains(s[i + 1]) else {
                text.append(s[i]); i += 1; continue
            }
            let kind = s[i + 1]
            let closer: Unicode.Scalar = kind == "{" ? "}" : kind == "%" ? "%" : "#"
            var j = i + 2
            let stripLeft = j < s.count && s[j] == "-"
            if stripLeft || (j < s.count && s[j] == "+") { j += 1 }
            // Find the closing delimiter outside string literals.
            var quote: Unicode.Scalar? = nil
            var end = -1
            var k = j
            while k + 1 < s.count {
                let c = s[k]
                if let q = quote {
                    if c == "\\" { k += 2; continue }
                    if c == q { quote = nil }
                } else if kind != "#" && (c == "'" || c == "\"") {
                    quote = c
                } else if c == closer && s[k + 1] == "}" {
                    end = k
                    break
                }
                k += 1
            }
            guard end >= 0 else { throw TemplateError("unclosed '{\(kind)' tag") }
            var innerEnd = end
            let stripRight = innerEnd > j && s[innerEnd - 1] == "-"
            if stripRight || (innerEnd > j && s[innerEnd - 1] == "+") { innerEnd -= 1 }
            if stripLeft {
                stripTrailingWhitespace()
            } else if kind != "{" {
                // lstrip_blocks: remove spaces and tabs between the line start and the tag.
                var b = i - 1
                while b >= 0, s[b] == " " || s[b] == "\t" { b -= 1 }
                if b < 0 || s[b] == "\n" {
                    while let last = text.last, last == " " || last == "\t" { text.removeLast() }
                }
            }
            flush()
            var inner = String.UnicodeScalarView()
            inner.append(contentsOf: s[j..<innerEnd])
            switch kind {
            case "{": pieces.append(.output(try tokens(String(inner))))
            case "%": pieces.append(.block(try tokens(String(inner))))
            default: break
            }
            i = end + 2
            if stripRight { stripNextLeading = true } else if kind != "{" { trimNextNewline = true }
        }
        flush()
        return pieces
    }

    static func tokens(_ source: String) throws -> [Token] {
        let s = Array(source.unicodeScalars)
        var out: [Token] = []
        var i = 0
        let symbols = ["//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "(", ")", "[", "]", "{", "}", ".", ",", ":", "|", "="]
        while i < s.count {
            let c = s[i]
            if c.properties.isWhitespace { i += 1; continue }
            if c == "'" || c == "\"" {
                var value = String.UnicodeScalarView()
                var j = i + 1
                while j < s.count, s[j] != c {
                    if s[j] == "\\", j + 1 < s.count {
                        j += 1
                        switch s[j] {
                        case "n": value.append("\n")
                        case "t": value.append("\t")
                        case "r": value.append("\r")
                        default: value.append(s[j])
                        }
                    } else {
                        value.append(s[j])
                    }
                    j += 1
                }
                guard j < s.count else { throw TemplateError("unterminated string literal") }
                out.append(.string(String(value)))
                i = j + 1
                continue
            }
            if c.properties.numericType != nil, c.isASCII {
                var j = i
                while j < s.count, s[j].isASCII, s[j].properties.numericType != nil { j += 1 }
                if j + 1 < s.count, s[j] == ".", s[j + 1].isASCII, s[j + 1].properties.numericType != nil {
                    j += 1
                    while j < s.count, s[j].isASCII, s[j].properties.numericType != nil { j += 1 }
                    out.append(.double(Double(String(String.UnicodeScalarView(s[i..<j])))!))
                } else {
                    guard let v = Int(String(String.UnicodeScalarView(s[i..<j]))) else { throw TemplateError("integer literal too large") }
                    out.append(.int(v))
                }
                i = j
                continue
            }
            if c == "_" || c.properties.isAlphabetic {
                var j = i
                while j < s.count, s[j] == "_" || s[j].properties.isAlphabetic || (s[j].isASCII && s[j].properties.numericType != nil) { j += 1 }
                out.append(.name(String(String.UnicodeScalarView(s[i..<j]))))
                i = j
                continue
            }
            guard let sym = symbols.first(where: { sym in
                let u = Array(sym.unicodeScalars)
                return i + u.count <= s.count && Array(s[i..<(i + u.count)]) == u
            }) else { throw TemplateError("unexpected character '\(c)'") }
            out.append(.symbol(sym))
            i += sym.unicodeScalars.count
        }
        return out
    }
}
