/** The tiny random Llama and word-level tokenizer the trainer's pytest suite builds, for tests that run the real trainer (no download). */
import { execFileSync } from 'child_process';
import * as path from 'path';

const REPO = path.resolve(__dirname, '..', '..');
export const PYTHON = path.join(REPO, '.venv', 'bin', 'python');

/** Writes the tiny model and its tokenizer as a Hugging Face folder at `folder`. */
export function writeTinyModel(folder: string): void {
  const script = [
    'import sys; sys.path.insert(0, sys.argv[2])',
    'from conftest import make_model, make_tokenizer',
    'tok = make_tokenizer(); make_model(len(tok)).save_pretrained(sys.argv[1]); tok.save_pretrained(sys.argv[1])'
  ].join('\n');
  execFileSync(PYTHON, ['-c', script, folder, path.join(REPO, 'trainer', 'tests')], { stdio: 'pipe' });
}
