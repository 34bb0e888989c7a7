/// Recursive-descent parser for the Jinja subset chat templates use. Anything outside the
/// subset is an error naming the construct.
struct TemplateParser {
    static let maximumNesting = 64

    private var pieces: [TemplateLexer.Piece]
    private var position = 0

    static func parse(_ source: String) throws -> [Statement] {
        var parser = TemplateParser(pieces: try TemplateLexer.pieces(source))
        let (body, end) = try parser.statements(until: [], depth: 0)
        if let end { throw TemplateError("unexpected '{% \(end) %}'") }
        return body
    }

    private init(pieces: [TemplateLexer.Piece]) { self.pieces = pieces }

    /// Parses statements until a block tag whose keyword is in `terminators` (returned, with
    /// its tokens left for the caller in `pendingTokens`).
    private var pendingTokens: [TemplateLexer.Token] = []

    private mutating func statements(until terminators: Set<String>, depth: Int) throws -> ([Statement], String?) {
        guard depth < Self.maximumNesting else { throw TemplateError("blocks nested deeper than \(Self.maximumNesting)") }
        var body: [Statement] = []
        while position < pieces.count {
            let piece = pieces[position]
            position += 1
            switch piece {
            case .text(let t): body.append(.text(t))
            case .output(let tokens):
                var e = ExpressionParser(tokens: tokens)
                body.append(.output(try e.parseAll()))
            case .block(let tokens):
                guard case .name(let keyword)? = tokens.first else { throw TemplateError("empty or malformed block tag") }
                if terminators.contains(keyword) {
                    pendingTokens = Array(tokens.dropFirst())
                    return (body, keyword)
                }
                body.append(try statement(keyword, Array(tokens.dropFirst()), depth: depth))
            }
        }
        return (body, nil)
    }

    private mutating func statement(_ keyword: String, _ tokens: [TemplateLexer.Token], depth: Int) throws -> Statement {
        var e = ExpressionParser(tokens: tokens)
        switch keyword {
        case "if":
            var branches: [(Expression, [Statement])] = []
            var condition = try e.parseAll()
            while true {
                let (body, end) = try statements(until: ["elif", "else", "endif"], depth: depth + 1)
                branches.append((condition, body))
                switch end {
                case "elif":
                    var c = ExpressionParser(tokens: pendingTokens)
                    condition = try c.parseAll()
                case "else":
                    let (otherwise, close) = try statements(until: ["endif"], depth: depth + 1)
                    guard close == "endif" else { throw TemplateError("'if' without 'endif'") }
                    return .ifChain(branches, otherwise: otherwise)
                case "endif": return .ifChain(branches, otherwise: [])
                default: throw TemplateError("'if' without 'endif'")
                }
            }
        case "for":
            var targets = [try e.name()]
            while e.accept(.symbol(",")) { targets.append(try e.name()) }
            try e.expect(.name("in"))
            let iterable = try e.parseOr(allowConditional: false)
            var condition: Expression? = nil
            if e.accept(.name("if")) { condition = try e.parseOr(allowConditional: false) }
            if e.accept(.name("recursive")) { throw TemplateError("recursive loops are not supported") }
            try e.expectEnd()
            let (body, end) = try statements(until: ["else", "endfor"], depth: depth + 1)
            var otherwise: [Statement] = []
            if end == "else" {
                let (o, close) = try statements(until: ["endfor"], depth: depth + 1)
                guard close == "endfor" else { throw TemplateError("'for' without 'endfor'") }
                otherwise = o
            } else if end != "endfor" {
                throw TemplateError("'for' without 'endfor'")
            }
            return .forLoop(targets: targets, iterable: iterable, condition: condition, body: body, otherwise: otherwise)
        case "set":
            let target = try e.name()
            var attribute: String? = nil
            if e.accept(.symbol(".")) { attribute = try e.name() }
            if e.atEnd {
                guard attribute == nil else { throw TemplateError("block 'set' cannot assign an attribute") }
                let (body, end) = try statements(until: ["endset"], depth: depth + 1)
                guard end == "endset" else { throw TemplateError("'set' block without 'endset'") }
                return .setBlock(target: target, body: body)
            }
            try e.expect(.symbol("="))
            return .set(target: target, attribute: attribute, value: try e.parseAll())
        case "macro":
            let name = try e.name()
            try e.expect(.symbol("("))
            var parameters: [(String, Expression?)] = []
            while !e.accept(.symbol(")")) {
                let p = try e.name()
                var def: Expression? = nil
                if e.accept(.symbol("=")) { def = try e.parseOr(allowConditional: true) }
                parameters.append((p, def))
                if !e.accept(.symbol(",")) { try e.expect(.symbol(")")); break }
            }
            try e.expectEnd()
            let (body, end) = try statements(until: ["endmacro"], depth: depth + 1)
            guard end == "endmacro" else { throw TemplateError("'macro' without 'endmacro'") }
            return .macro(name: name, parameters: parameters, body: body)
        case "break": try e.expectEnd(); return .breakLoop
        case "continue": try e.expectEnd(); return .continueLoop
        case "generation", "endgeneration":
            return .text("")
        default:
            throw TemplateError("unsupported statement '\(keyword)'")
        }
    }
}

/// Parses one expression from a tag's tokens, with Jinja's precedence.
struct ExpressionParser {
    private let tokens: [TemplateLexer.Token]
    private var i = 0
    private var depth = 0

    init(tokens: [TemplateLexer.Token]) { self.tokens = tokens }

    var atEnd: Bool { i >= tokens.count }

    mutating func accept(_ t: TemplateLexer.Token) -> Bool {
        if i < tokens.count, tokens[i] == t { i += 1; return true }
        return false
    }

    mutating func expect(_ t: TemplateLexer.Token) throws {
        guard accept(t) else { throw TemplateError("expected \(Self.show(t)) but found \(i < tokens.count ? Self.show(tokens[i]) : "end of tag")") }
    }

    mutating func expectEnd() throws {
        if i < tokens.count { throw TemplateError("unexpected \(Self.show(tokens[i]))") }
    }

    mutating func name() throws -> String {
        guard i < tokens.count, case .name(let n) = tokens[i] else {
            throw TemplateError("expected a name but found \(i < tokens.count ? Self.show(tokens[i]) : "end of tag")")
        }
        i += 1
        return n
    }

    static func show(_ t: TemplateLexer.Token) -> String {
        switch t {
        case .name(let n): "'\(n)'"
        case .string(let s): "string '\(s)'"
        case .int(let v): "\(v)"
        case .double(let v): "\(v)"
        case .symbol(let s): "'\(s)'"
        }
    }

    mutating func parseAll() throws -> Expression {
        let e = try parseOr(allowConditional: true)
        try expectEnd()
        return e
    }

    private mutating func nest() throws {
        depth += 1
        guard depth < TemplateParser.maximumNesting else { throw TemplateError("expression nested deeper than \(TemplateParser.maximumNesting)") }
    }

    mutating func parseOr(allowConditional: Bool) throws -> Expression {
        try nest()
        defer { depth -= 1 }
        var left = try parseAnd()
        while accept(.name("or")) { left = .binary("or", left, try parseAnd()) }
        if allowConditional, accept(.name("if")) {
            let condition = try parseOr(allowConditional: false)
            var otherwise: Expression? = nil
            if accept(.name("else")) { otherwise = try parseOr(allowConditional: true) }
            return .conditional(left, condition: condition, otherwise: otherwise)
        }
        return left
    }

    private mutating func parseAnd() throws -> Expression {
        var left = try parseNot()
        while accept(.name("and")) { left = .binary("and", left, try parseNot()) }
        return left
    }

    private mutating func parseNot() throws -> Expression {
        if accept(.name("not")) {
            try nest()
            defer { depth -= 1 }
            return .unary("not", try parseNot())
        }
        return try parseComparison()
    }

    private mutating func parseComparison() throws -> Expression {
        var left = try parseConcat()
        while true {
            if i < tokens.count, case .symbol(let op) = tokens[i], ["==", "!=", "<", ">", "<=", ">="].contains(op) {
                i += 1
                left = .binary(op, left, try parseConcat())
            } else if accept(.name("in")) {
                left = .binary("in", left, try parseConcat())
            } else if i + 1 < tokens.count, tokens[i] == .name("not"), tokens[i + 1] == .name("in") {
                i += 2
                left = .unary("not", .binary("in", left, try parseConcat()))
            } else if accept(.name("is")) {
                let negated = accept(.name("not"))
                let test = try name()
                var args: [Expression] = []
                if accept(.symbol("(")) { (args, _) = try arguments() }
                left = .test(left, test, args, negated: negated)
            } else {
                return left
            }
        }
    }

    private mutating func parseConcat() throws -> Expression {
        var left = try parseAdditive()
        while accept(.symbol("~")) { left = .binary("~", left, try parseAdditive()) }
        return left
    }

    private mutating func parseAdditive() throws -> Expression {
        var left = try parseMultiplicative()
        while true {
            if accept(.symbol("+")) { left = .binary("+", left, try parseMultiplicative()) }
            else if accept(.symbol("-")) { left = .binary("-", left, try parseMultiplicative()) }
            else { return left }
        }
    }

    private mutating func parseMultiplicative() throws -> Expression {
        var left = try parseUnary()
        while true {
            if i < tokens.count, case .symbol(let op) = tokens[i], ["*", "/", "//", "%"].contains(op) {
                i += 1
                left = .binary(op, left, try parseUnary())
            } else {
                return left
            }
        }
    }

    private mutating func parseUnary() throws -> Expression {
        if accept(.symbol("-")) { try nest(); defer { depth -= 1 }; return .unary("-", try parseUnary()) }
        if accept(.symbol("+")) { return try parseUnary() }
        return try parsePostfix(try parsePrimary())
    }

    private mutating func parsePostfix(_ base: Expression) throws -> Expression {
        var e = base
        while true {
            if accept(.symbol(".")) {
                e = .attribute(e, try name())
            } else if accept(.symbol("[")) {
                var parts: [Expression?] = [nil]
                var isSlice = false
                while !accept(.symbol("]")) {
                    if accept(.symbol(":")) { isSlice = true; parts.append(nil); continue }
                    parts[parts.count - 1] = try parseOr(allowConditional: true)
                }
                if isSlice {
                    guard parts.count <= 3 else { throw TemplateError("slice with more than three parts") }
                    e = .slice(e, parts[0], parts.count > 1 ? parts[1] : nil, parts.count > 2 ? parts[2] : nil)
                } else {
                    guard let index = parts[0] else { throw TemplateError("empty subscript") }
                    e = .index(e, index)
                }
            } else if accept(.symbol("(")) {
                let (args, kwargs) = try arguments()
                e = .call(e, args, kwargs)
            } else if accept(.symbol("|")) {
                let f = try name()
                var args: [Expression] = [], kwargs: [(String, Expression)] = []
                if accept(.symbol("(")) { (args, kwargs) = try arguments() }
                e = .filter(e, f, args, kwargs)
            } else {
                return e
            }
        }
    }

    /// Arguments after an opening parenthesis, through the closing one.
    private mutating func arguments() throws -> ([Expression], [(String, Expression)]) {
        var args: [Expression] = [], kwargs: [(String, Expression)] = []
        while !accept(.symbol(")")) {
            if i + 1 < tokens.count, case .name(let k) = tokens[i], tokens[i + 1] == .symbol("=") {
                i += 2
                kwargs.append((k, try parseOr(allowConditional: true)))
            } else {
                args.append(try parseOr(allowConditional: true))
            }
            if !accept(.symbol(",")) { try expect(.symbol(")")); break }
        }
        return (args, kwargs)
    }

    private mutating func parsePrimary() throws -> Expression {
        guard i < tokens.count else { throw TemplateError("expression ends too early") }
        let t = tokens[i]
        i += 1
        switch t {
        case .string(var s):
            // Adjacent string literals concatenate.
            while i < tokens.count, case .string(let more) = tokens[i] { s += more; i += 1 }
            return .literal(.string(s))
        case .int(let v): return .literal(.int(v))
        case .double(let v): return .literal(.double(v))
        case .name(let n):
            switch n {
            case "true", "True": return .literal(.bool(true))
            case "false", "False": return .literal(.bool(false))
            case "none", "None": return .literal(.none)
            default: return .name(n)
            }
        case .symbol("("):
            try nest()
            defer { depth -= 1 }
            let first = try parseOr(allowConditional: true)
            if accept(.symbol(",")) {
                var items = [first]
                while !accept(.symbol(")")) {
                    items.append(try parseOr(allowConditional: true))
                    if !accept(.symbol(",")) { try expect(.symbol(")")); break }
                }
                return .list(items)
            }
            try expect(.symbol(")"))
            return first
        case .symbol("["):
            try nest()
            defer { depth -= 1 }
            var items: [Expression] = []
            while !accept(.symbol("]")) {
                items.append(try parseOr(allowConditional: true))
                if !accept(.symbol(",")) { try expect(.symbol("]")); break }
            }
            return .list(items)
        case .symbol("{"):
            try nest()
            defer { depth -= 1 }
            var pairs: [(Expression, Expression)] = []
            while !accept(.symbol("}")) {
                let k = try parseOr(allowConditional: true)
                try expect(.symbol(":"))
                pairs.append((k, try parseOr(allowConditional: true)))
                if !accept(.symbol(",")) { try expect(.symbol("}")); break }
            }
            return .dict(pairs)
        default:
            throw TemplateError("unexpected \(Self.show(t))")
        }
    }
}
