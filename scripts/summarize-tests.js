#!/usr/bin/env node
// Reads each suite's machine-readable report (jest JSON, pytest JUnit XML, Playwright JSON, scripts/lint's
// JSON: one check per lint tool) and prints
// the per-suite counts and one closing line "N passed, N failed". A suite that exited non-zero
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

function jestCounts(text) {
  const r = JSON.parse(text);
  // Suites that failed to load (syntax errors, missing modules) have no test results but count.
  const broken = r.testResults.filter(t => t.status === 'failed' && t.assertionResults.length === 0).length;
  return { passed: r.numPassedTests, failed: r.numFailedTests + broken, skipped: r.numPendingTests + r.numTodoTests };
}

function junitCounts(text) {
  const attr = name => {
    const m = new RegExp(`<testsuite[^>]*\\s${name}="(\\d+)"`).exec(text);
    return m ? Number(m[1]) : 0;
  };
  const tests = attr('tests');
  const failed = attr('failures') + attr('errors');
  const skipped = attr('skipped');
  return { passed: tests - failed - skipped, failed, skipped };
}

function playwrightCounts(text) {
  const s = JSON.parse(text).stats;
  // A test that passed on retry is flaky but passed; retries are off in the config anyway.
  return { passed: s.expected + (s.flaky || 0), failed: s.unexpected, skipped: s.skipped };
}

// scripts/lint --report: {"checks": [{"name": "eslint", "passed": true}, ...]}, each tool one test.
function lintCounts(text) {
  const checks = JSON.parse(text).checks;
  const passed = checks.filter(c => c.passed === true).length;
  return { passed, failed: checks.length - passed, skipped: 0 };
}

const parsers = { lint: lintCounts, 'kernel-lib': jestCounts, extension: jestCounts, trainer: junitCounts, 'ui-tests': playwrightCounts };
const files = { lint: 'lint.json', 'kernel-lib': 'kernel-lib.json', extension: 'extension.json', trainer: 'trainer.xml', 'ui-tests': 'ui-tests.json' };

let passed = 0;
let failed = 0;
let skipped = 0;
console.log('\nTest summary');
for (const suite of suites) {
  const exit = Number(readIf(path.join(dir, `${suite}.exit`)) ?? 1);
  const report = readIf(path.join(dir, files[suite]));
  let c = { passed: 0, failed: 0, skipped: 0 };
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
  }
  console.log(`  ${suite.padEnd(11)} ${c.passed} passed, ${c.failed} failed, ${c.skipped} skipped${note}`);
  passed += c.passed;
  failed += c.failed;
  skipped += c.skipped;
}
if (passed + failed === 0) failed = 1;
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed === 0 ? 0 : 1);
