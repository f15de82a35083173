#!/usr/bin/env node
// Reads each suite's machine-readable report (jest JSON, pytest JUnit XML, Playwright JSON, scripts/lint's
// JSON: one check per lint tool) and prints the per-suite counts, each failed test by name with the head
// of its error, and one closing line "N passed, N failed". The failures are listed here, at the end,
// because a CI log is often read from its tail only. A suite that exited non-zero
// without a report, or with fewer failures than its exit code implies, counts as one failure, so a
// crashed runner can never look green. Exit code: 0 only if nothing failed and something ran.
'use strict';
const fs = require('fs');
const path = require('path');

const dir = process.argv[2];
const suites = ['lint', 'kernel-lib', 'extension', 'trainer', 'ui-tests'];

function readIf(file) {
  return fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : null;
}

/** The first few non-empty lines of an error text (where jest puts "expected" and "received"), without
 * terminal colours, joined into one line of at most 600 characters. */
function errorHead(text) {
  const head = String(text ?? '')
    .replace(/\u001b\[[0-9;]*m/g, '')
    .split('\n')
    .map(l => l.trim())
    .filter(l => l)
    .slice(0, 8)
    .join(' | ');
  return head.length > 600 ? `${head.slice(0, 600)}…` : head;
}

function jestCounts(text) {
  const r = JSON.parse(text);
  // Suites that failed to load (syntax errors, missing modules) have no test results but count.
  const brokenSuites = r.testResults.filter(t => t.status === 'failed' && t.assertionResults.length === 0);
  const failures = [
    ...brokenSuites.map(t => ({ name: path.basename(t.name), error: errorHead(t.message) })),
    ...r.testResults.flatMap(t =>
      t.assertionResults
        .filter(a => a.status === 'failed')
        .map(a => ({ name: `${path.basename(t.name)} › ${a.fullName}`, error: errorHead(a.failureMessages.join('\n')) }))
    )
  ];
  return { passed: r.numPassedTests, failed: r.numFailedTests + brokenSuites.length, skipped: r.numPendingTests + r.numTodoTests, failures };
}

function junitCounts(text) {
  const attr = name => {
    const m = new RegExp(`<testsuite[^>]*\\s${name}="(\\d+)"`).exec(text);
    return m ? Number(m[1]) : 0;
  };
  const tests = attr('tests');
  const failed = attr('failures') + attr('errors');
  const skipped = attr('skipped');
  const unescape = s => s.replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&#10;/g, '\n').replace(/&amp;/g, '&');
  const failures = [];
  for (const m of text.matchAll(/<testcase\s([^>]*?)(?:\/>|>([\s\S]*?)<\/testcase>)/g)) {
    const problem = /<(failure|error)(?:\s+message="([^"]*)")?[^>]*>/.exec(m[2] ?? '');
    if (!problem) continue;
    const attrOf = name => unescape(new RegExp(`\\b${name}="([^"]*)"`).exec(m[1])?.[1] ?? '');
    failures.push({ name: `${attrOf('classname')}::${attrOf('name')}`, error: errorHead(unescape(problem[2] ?? problem[1])) });
  }
  return { passed: tests - failed - skipped, failed, skipped, failures };
}

function playwrightCounts(text) {
  const report = JSON.parse(text);
  const s = report.stats;
  const failures = [];
  const visit = suite => {
    for (const spec of suite.specs ?? [])
      for (const test of spec.tests ?? [])
        if (test.status === 'unexpected') {
          const last = (test.results ?? []).at(-1);
          failures.push({ name: `${spec.file} › ${spec.title}`, error: errorHead(last?.error?.message ?? last?.status) });
        }
    for (const child of suite.suites ?? []) visit(child);
  };
  for (const suite of report.suites ?? []) visit(suite);
  // A test that passed on retry is flaky but passed; retries are off in the config anyway.
  return { passed: s.expected + (s.flaky || 0), failed: s.unexpected, skipped: s.skipped, failures };
}

// scripts/lint --report: {"checks": [{"name": "eslint", "passed": true}, ...]}, each tool one test.
function lintCounts(text) {
  const checks = JSON.parse(text).checks;
  const passed = checks.filter(c => c.passed === true).length;
  const failures = checks.filter(c => c.passed !== true).map(c => ({ name: c.name, error: 'see its output above' }));
  return { passed, failed: checks.length - passed, skipped: 0, failures };
}

const parsers = { lint: lintCounts, 'kernel-lib': jestCounts, extension: jestCounts, trainer: junitCounts, 'ui-tests': playwrightCounts };
const files = { lint: 'lint.json', 'kernel-lib': 'kernel-lib.json', extension: 'extension.json', trainer: 'trainer.xml', 'ui-tests': 'ui-tests.json' };

let passed = 0;
let failed = 0;
let skipped = 0;
const failedTests = [];
console.log('\nTest summary');
for (const suite of suites) {
  const exit = Number(readIf(path.join(dir, `${suite}.exit`)) ?? 1);
  const report = readIf(path.join(dir, files[suite]));
  let c = { passed: 0, failed: 0, skipped: 0, failures: [] };
  let note = '';
  try {
    if (report) c = parsers[suite](report);
    else note = ' (no report: the runner did not start or crashed)';
  } catch (err) {
    note = ` (unreadable report: ${err.message})`;
  }
  if (exit !== 0 && c.failed === 0) {
    c.failed = 1;
    note += ` (runner exited ${exit})`;
    c.failures = [{ name: '(the runner)', error: `exited ${exit}${report ? ' with no failed test in its report' : ' without a report'}: see its output above` }];
  }
  console.log(`  ${suite.padEnd(11)} ${c.passed} passed, ${c.failed} failed, ${c.skipped} skipped${note}`);
  passed += c.passed;
  failed += c.failed;
  skipped += c.skipped;
  for (const f of c.failures) failedTests.push(`  ${suite}: ${f.name}\n      ${f.error}`);
}
if (failedTests.length) console.log(`Failed tests\n${failedTests.join('\n')}`);
if (passed + failed === 0) failed = 1;
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed === 0 ? 0 : 1);
