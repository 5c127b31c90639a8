// Reads the StartOS package's TypeScript with the TypeScript compiler and prints, as JSON,
// the facts tests/packaging/test_startos.py checks: the constants of utils.ts and cln.ts,
// the environment main.ts passes, its mounts and its daemons, and the ports interfaces.ts
// binds. Values are worked out from
// literals and those constants; anything else is reported as {"unevaluated": <source>}.
//
// Usage: node startos_source.cjs <package dir>   (typescript comes from its node_modules)
'use strict'
const fs = require('fs')
const path = require('path')

const packageDir = path.resolve(process.argv[2])
const ts = require(path.join(packageDir, 'node_modules', 'typescript'))
const sourceDir = path.join(packageDir, 'startos')

function parse(name) {
  const file = path.join(sourceDir, name)
  return ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true)
}

function walk(node, visit) {
  visit(node)
  ts.forEachChild(node, (child) => walk(child, visit))
}

function evaluate(node, constants) {
  if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) return node.text
  if (ts.isNumericLiteral(node)) return Number(node.text)
  if (node.kind === ts.SyntaxKind.TrueKeyword) return true
  if (node.kind === ts.SyntaxKind.FalseKeyword) return false
  if (node.kind === ts.SyntaxKind.NullKeyword) return null
  if (ts.isAsExpression(node) || ts.isParenthesizedExpression(node)) {
    return evaluate(node.expression, constants)
  }
  if (ts.isIdentifier(node) && node.text in constants) return constants[node.text]
  if (ts.isTemplateExpression(node)) {
    const parts = [node.head.text]
    for (const span of node.templateSpans) {
      const value = evaluate(span.expression, constants)
      if (typeof value === 'object' && value !== null) return { unevaluated: node.getText() }
      parts.push(String(value), span.literal.text)
    }
    return parts.join('')
  }
  if (
    ts.isCallExpression(node) &&
    ts.isIdentifier(node.expression) &&
    node.expression.text === 'String' &&
    node.arguments.length === 1
  ) {
    const value = evaluate(node.arguments[0], constants)
    return typeof value === 'object' && value !== null ? value : String(value)
  }
  if (ts.isArrayLiteralExpression(node)) {
    return node.elements.map((element) => evaluate(element, constants))
  }
  if (ts.isObjectLiteralExpression(node)) {
    const object = {}
    for (const property of node.properties) {
      if (ts.isPropertyAssignment(property)) {
        object[propertyName(property)] = evaluate(property.initializer, constants)
      } else if (ts.isShorthandPropertyAssignment(property)) {
        object[property.name.text] = evaluate(property.name, constants)
      }
    }
    return object
  }
  return { unevaluated: node.getText() }
}

function propertyName(property) {
  const name = property.name
  return ts.isIdentifier(name) || ts.isStringLiteral(name) ? name.text : name.getText()
}

/** `export const name = <value>` of a module, evaluated in order. */
function exportedConstants(file, constants) {
  for (const statement of file.statements) {
    if (!ts.isVariableStatement(statement)) continue
    for (const declaration of statement.declarationList.declarations) {
      if (ts.isIdentifier(declaration.name) && declaration.initializer) {
        constants[declaration.name.text] = evaluate(declaration.initializer, constants)
      }
    }
  }
  return constants
}

/** The calls `<something>.<method>(...)` in a file, with their evaluated arguments. */
function methodCalls(file, method, constants) {
  const calls = []
  walk(file, (node) => {
    if (
      ts.isCallExpression(node) &&
      ts.isPropertyAccessExpression(node.expression) &&
      node.expression.name.text === method
    ) {
      calls.push(node.arguments.map((argument) => evaluate(argument, constants)))
    }
  })
  return calls
}

/** Every property named like an environment variable (UPPER_CASE) in a file. */
function environment(file, constants) {
  const env = {}
  walk(file, (node) => {
    if (ts.isPropertyAssignment(node) && /^[A-Z][A-Z0-9_]*$/.test(propertyName(node))) {
      env[propertyName(node)] = evaluate(node.initializer, constants)
    }
  })
  return env
}

const constants = {}
for (const name of ['utils.ts', 'cln.ts']) exportedConstants(parse(name), constants)
const main = parse('main.ts')
const daemons = {}
for (const method of ['addDaemon', 'addOneshot', 'addHealthCheck']) {
  for (const [id, options] of methodCalls(main, method, constants)) {
    daemons[id] = { kind: method, ...options }
  }
}
const interfaces = parse('interfaces.ts')
process.stdout.write(
  JSON.stringify({
    constants,
    boundPorts: methodCalls(interfaces, 'bindPort', constants).map((args) => args[0]),
    env: environment(main, constants),
    volumeMounts: methodCalls(main, 'mountVolume', constants).map((args) => args[0]),
    dependencyMounts: methodCalls(main, 'mountDependency', constants).map((args) => args[0]),
    daemons,
  }),
)
