// ESLint for the TypeScript of every package (flat config, ESLint 9). The rules are the JupyterLab
// extension template's: typescript-eslint's recommended set, with formatting left to Prettier
// (eslint-config-prettier switches off the rules Prettier owns; `.prettierrc.json` has its options).
import js from '@eslint/js';
import prettier from 'eslint-config-prettier';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    // Build outputs, generated types and installed packages.
    ignores: ['**/node_modules/**', '**/dist/**', '**/lib/**', '**/.bench-dist/**', 'extension/nanoresearch_jupyterlab/**', 'schema/dist/**']
  },
  {
    files: ['kernel-lib/src/**/*.ts', 'kernel-lib/test/**/*.ts', 'extension/src/**/*.ts', 'ui-tests/tests/**/*.ts'],
    extends: [js.configs.recommended, ...tseslint.configs.recommended, prettier],
    rules: {
      // From the template: unused parameters are part of a callback's shape; unused locals are not.
      // A rest sibling is how a key is left out of a copy (`const { secret, ...rest } = row`).
      '@typescript-eslint/no-unused-vars': ['error', { args: 'none', ignoreRestSiblings: true }],
      // `== null` is the one loose comparison kept: it means null or undefined.
      eqeqeq: ['error', 'smart'],
      'prefer-arrow-callback': 'error'
    }
  },
  {
    // The template's own setting (it switches no-explicit-any off everywhere), kept for the browser-side tests only:
    // their fakes stand in for JupyterLab objects (kernel connections, render models, notebook panels) and they reach
    // into in-page objects (`window.jupyterapp.shell.currentWidget` is a bare Widget). Library and extension code stays typed.
    files: ['extension/src/__tests__/**/*.ts', 'ui-tests/tests/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' }
  }
);
