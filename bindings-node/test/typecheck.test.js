'use strict';
// index.js is type-checked against index.d.ts by `tsc --noEmit -p .` in the
// suite (scripts/test.sh). This test shows that check has teeth: a copy of
// the package with one declared method renamed in the implementation, or
// one undeclared method added, must fail it.

const test = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const pkg = path.resolve(__dirname, '..');
const tsc = path.join(pkg, 'node_modules', 'typescript', 'bin', 'tsc');

/** Runs tsc on a copy of the package whose index.js went through `edit`. */
function checkEdited(t, edit) {
  // Inside the package, so that its node_modules (@types/node) are found.
  const dir = fs.mkdtempSync(path.join(pkg, 'test', '.drift-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  for (const file of ['index.d.ts', 'tsconfig.json', 'platform.js']) fs.copyFileSync(path.join(pkg, file), path.join(dir, file));
  const source = fs.readFileSync(path.join(pkg, 'index.js'), 'utf8');
  const edited = edit(source);
  assert.notEqual(edited, source, 'the edit changed the source');
  fs.writeFileSync(path.join(dir, 'index.js'), edited);
  return spawnSync(process.execPath, [tsc, '--noEmit', '-p', dir], { encoding: 'utf8', timeout: 120000 });
}

test('the type check of index.js against index.d.ts fails on drift', { skip: !fs.existsSync(tsc) && 'typescript is not installed (npm install)' }, async (t) => {
  const renamed = checkEdited(t, (s) => s.replace(/^ {2}unregister\(group, element\) \{/m, '  remove(group, element) {'));
  assert.notEqual(renamed.status, 0, 'a renamed method passed the check');
  assert.match(renamed.stdout, /'remove'|unregister/);

  const added = checkEdited(t, (s) => s.replace(/^ {2}stats\(\) \{/m, '  /** @returns {number} */\n  pending() {\n    return 0;\n  }\n\n  stats() {'));
  assert.notEqual(added.status, 0, 'an undeclared method passed the check');
  assert.match(added.stdout, /"pending"/);

  const unchanged = checkEdited(t, (s) => s.replace("'use strict';", "'use strict';\n"));
  assert.equal(unchanged.status, 0, `the unchanged implementation fails the check: ${unchanged.stdout}`);
});
