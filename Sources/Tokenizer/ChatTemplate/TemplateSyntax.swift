/// The syntax tree of a chat template.
indirect enum Expression: Sendable {
    case literal(TemplateValue)
    case name(String)
    case list([Expression])
    case dict([(Expression, Expression)])
    case attribute(Expression, String)
    case index(Expression, Expression)
    case slice(Expression, Expression?, Expression?, Expression?)
    case call(Expression, [Expression], [(String, Expression)])
    case filter(Expression, String, [Expression], [(String, Expression)])
    case test(Expression, String, [Expression], negated: Bool)
    case unary(String, Expression)
    case binary(String, Expression, Expression)
    case conditional(Expression, condition: Expression, otherwise: Expression?)
}

indirect enum Statement: Sendable {
    case text(String)
    case output(Expression)
    case forLoop(targets: [String], iterable: Expression, condition: Expression?, body: [Statement], otherwise: [Statement])
    case ifChain([(Expression, [Statement])], otherwise: [Statement])
    case set(target: String, attribute: String?, value: Expression)
    case setBlock(target: String, body: [Statement])
    case macro(name: String, parameters: [(String, Expression?)], body: [Statement])
    case breakLoop
    case continueLoop
}

/// A template that cannot be parsed or rendered, with the construct at fault.
public struct TemplateError: Error, Equatable, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "chat template: \(message)" }
}
