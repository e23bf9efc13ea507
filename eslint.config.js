// ESLint flat config: typescript-eslint's recommended rules over sources, tests and benches.
import tseslint from 'typescript-eslint';

export default tseslint.config({ ignores: ['node_modules/', 'native/', 'out/', 'dist/'] }, ...tseslint.configs.recommended, {
  rules: {
    '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    '@typescript-eslint/no-non-null-assertion': 'off',
  },
});
