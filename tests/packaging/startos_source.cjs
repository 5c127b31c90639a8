// Reads the StartOS package's TypeScript with the TypeScript compiler and prints, as JSON,
// the facts tests/packaging/test_startos.py checks: the constants of utils.ts and cln.ts,
// the environment main.ts passes, its mounts, its subcontainers (with the mounts each gets),
// its daemons, the bridge addresses it asks for, the tasks dependencies.ts sets Core
// Lightning, and the ports interfaces.ts binds. Values are
// worked out from literals and those constants; anything else is reported as
// {"unevaluated": <source>}. `a ? b : c` is {"when": "a", "then": b, "else": c}.
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
  if (ts.isConditionalExpression(node)) {
    return {
      when: node.condition.getText(),
      then: evaluate(node.whenTrue, constants),
      else: evaluate(node.whenFalse, constants),
    }
  }
  // `() => value`: the SDK's daemon factories (a factory returning null adds nothing).
  if (ts.isArrowFunction(node) && !ts.isBlock(node.body)) return evaluate(node.body, constants)
  if (subContainerCall(node)) return { subcontainer: evaluate(node.arguments[3], constants) }
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

const DAEMON_METHODS = ['addDaemon', 'addOneshot', 'addHealthCheck']
const MOUNT_METHODS = { mountVolume: 'volume', mountDependency: 'dependency' }

function calledMethod(node) {
  return ts.isCallExpression(node) && ts.isPropertyAccessExpression(node.expression)
    ? node.expression.name.text
    : null
}

/** `sdk.SubContainer.of(effects, { imageId }, mounts, name)` */
function subContainerCall(node) {
  return (
    calledMethod(node) === 'of' &&
    node.expression.expression.getText().endsWith('SubContainer') &&
    node.arguments.length === 4
  )
}

/**
 * Every property named like an environment variable (UPPER_CASE) in a file: the settings
 * main.ts builds for its processes. A daemon's own inline `env` is left to its `exec`.
 */
function environment(node, constants, env = {}) {
  if (DAEMON_METHODS.includes(calledMethod(node))) return env
  if (ts.isPropertyAssignment(node) && /^[A-Z][A-Z0-9_]*$/.test(propertyName(node))) {
    env[propertyName(node)] = evaluate(node.initializer, constants)
  }
  ts.forEachChild(node, (child) => {
    environment(child, constants, env) // a value returned here would stop forEachChild
  })
  return env
}

/** The mounts a `Mounts` chain (or a variable holding one) adds, in order. */
function mountsOf(node, mountVariables, constants) {
  const method = calledMethod(node)
  if (method in MOUNT_METHODS) {
    return [
      ...mountsOf(node.expression.expression, mountVariables, constants),
      { type: MOUNT_METHODS[method], ...evaluate(node.arguments[0], constants) },
    ]
  }
  if (ts.isIdentifier(node) && node.text in mountVariables) return mountVariables[node.text]
  if (method === 'of' || node.kind === ts.SyntaxKind.NullKeyword) return []
  return [{ unevaluated: node.getText() }]
}

/** main.ts's local `const name = <mounts chain | SubContainer.of(...)>`, and each subcontainer. */
function subcontainers(file, constants) {
  const mountVariables = {}
  const scope = { ...constants }
  walk(file, (node) => {
    if (!ts.isVariableDeclaration(node) || !ts.isIdentifier(node.name) || !node.initializer) {
      return
    }
    if (calledMethod(node.initializer) in MOUNT_METHODS) {
      mountVariables[node.name.text] = mountsOf(node.initializer, mountVariables, constants)
    } else if (subContainerCall(node.initializer)) {
      scope[node.name.text] = evaluate(node.initializer, constants)
    }
  })
  const found = {}
  walk(file, (node) => {
    if (!subContainerCall(node)) return
    const [, image, mounts, name] = node.arguments
    found[evaluate(name, constants)] = {
      imageId: evaluate(image, constants).imageId,
      mounts: mountsOf(mounts, mountVariables, constants),
    }
  })
  return { found, scope }
}

const constants = {}
for (const name of ['utils.ts', 'cln.ts']) exportedConstants(parse(name), constants)
const main = parse('main.ts')
const { found: containers, scope } = subcontainers(main, constants)
const daemons = {}
for (const method of DAEMON_METHODS) {
  for (const [id, options] of methodCalls(main, method, scope)) {
    // `() => (condition ? options : null)`: added only when the condition holds.
    const conditional = options && 'when' in options && options.else === null
    daemons[id] = conditional
      ? { kind: method, onlyWhen: options.when, ...options.then }
      : { kind: method, ...options }
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
    subcontainers: containers,
    bridgeAddresses: methodCalls(main, 'getBridgeAddress', constants).map((args) => args[1]),
    // sdk.action.createTask(effects, packageId, action, severity, options)
    dependencyTasks: methodCalls(parse('dependencies.ts'), 'createTask', constants).map(
      ([, packageId, action, severity, options]) => ({ packageId, action, severity, options }),
    ),
    daemons,
  }),
)
