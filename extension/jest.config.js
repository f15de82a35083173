/**
 * Unit tests of the extension (jsdom, through @jupyterlab/testing's preset).
 * The ESM allow-list is longer than the template's: importing @jupyterlab/cells pulls in
 * @jupyter/react-components and friends, which ship untranspiled ES modules.
 */
const jestJupyterLab = require('@jupyterlab/testutils/lib/jest-config');

const esModules = [
  '@codemirror',
  '@jupyter/ydoc',
  '@jupyter/react-components',
  '@jupyter/web-components',
  '@marijn',
  '@microsoft',
  'color',
  'exenv-es6',
  '@jupyterlab/',
  'lib0',
  'marked',
  'nanoid',
  'vscode-ws-jsonrpc',
  'y-protocols',
  'y-websocket',
  'yjs'
].join('|');

const base = jestJupyterLab(__dirname);

module.exports = {
  ...base,
  automock: false,
  // Type-checking happens in `tsc`; transpile-only keeps the suite fast on two cores.
  transform: {
    ...base.transform,
    '^.+\\.tsx?$': ['ts-jest/legacy', { tsconfig: './tsconfig.test.json', isolatedModules: true }]
  },
  reporters: ['default'],
  testRegex: 'src/.*/.*.spec.ts[x]?$',
  // The built labextension carries its own package.json: keep it out of jest's module map.
  modulePathIgnorePatterns: ['<rootDir>/nanoresearch_jupyterlab/labextension', '<rootDir>/lib'],
  transformIgnorePatterns: [`/node_modules/(?!${esModules}).+`]
};
