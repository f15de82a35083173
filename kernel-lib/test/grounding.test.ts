import { checkGrounding } from '../src/grounding';

const artifacts = {
  metrics: { centroid: { accuracy: 0.857142857, macro_f1: 0.8412 }, majority: { accuracy: 0.3333333 } },
  comparisons: [{ metric: 'accuracy', diff: 0.523809524 }],
  manifest: { seeds: 3, n_train: 1050, n_test: 450, split: { train: 0.7, test: 0.3 }, lr: 0.0003 }
};

describe('checkGrounding', () => {
  test('grounded numbers pass at the shown precision, as fractions or percentages', () => {
    const draft = [
      'The nearest-centroid classifier reaches an accuracy of 0.857 (85.7%), against 33.3% for the majority baseline.',
      'Macro-F1 is 0.84; the gap is 52.4 percentage points, i.e. 0.52 in accuracy.',
      'We train on 1,050 rows and test on 450 rows over 3 seeds with a 70/30 split and a learning rate of 3e-4.'
    ].join('\n');
    const r = checkGrounding(draft, artifacts);
    expect(r.ungrounded).toEqual([]);
    expect(r.numbers.map(n => n.text)).toEqual(
      expect.arrayContaining(['0.857', '85.7%', '33.3%', '0.84', '52.4 percentage points', '1,050', '450', '3', '70', '30', '3e-4'])
    );
    expect(r.numbers.find(n => n.text === '0.857')!.source).toBe('metrics.centroid.accuracy');
  });

  test('an invented number is flagged with its line', () => {
    const draft = 'Accuracy is 0.857.\nOur method is 12.5% faster than prior work.';
    const r = checkGrounding(draft, artifacts);
    expect(r.ungrounded.map(n => [n.text, n.line])).toEqual([['12.5%', 2]]);
  });

  test('rounding tolerance: a wrong last digit is not grounded', () => {
    expect(checkGrounding('accuracy 0.86', artifacts).ungrounded).toEqual([]);
    expect(checkGrounding('accuracy 0.858', artifacts).ungrounded.map(n => n.text)).toEqual(['0.858']);
    expect(checkGrounding('accuracy 85.8%', artifacts).ungrounded.map(n => n.text)).toEqual(['85.8%']);
    expect(checkGrounding('accuracy 0.9', artifacts).ungrounded).toEqual([]);
    expect(checkGrounding('accuracy 0.6', artifacts).ungrounded.map(n => n.text)).toEqual(['0.6']);
    expect(checkGrounding('we compare against 1 baseline', artifacts).ungrounded.map(n => n.text)).toEqual(['1']);
  });

  test('± values and ranges: each side must be grounded', () => {
    const ok = checkGrounding('accuracy 0.857 ± 0.333; runs spanned 0.33–0.86', artifacts);
    expect(ok.ungrounded).toEqual([]);
    expect(ok.numbers).toHaveLength(4);
    const bad = checkGrounding('accuracy 0.857 ± 0.02', artifacts);
    expect(bad.ungrounded.map(n => n.text)).toEqual(['0.02']);
  });

  test('non-claims are set aside: years, headings, labels, citations, identifiers, list markers', () => {
    const draft = [
      '## 4.2 Results',
      '1. As shown in Table 2 and Figure 3 (Section 5.1, Eq. (4)), results hold [@smith2020learning].',
      'Following Smith et al. (2020) and \\cite{lee2019}, we report F1 and ResNet50 numbers, see arXiv:2101.00001.',
      '\\label{sec:3} \\ref{tab:2}'
    ].join('\n');
    const r = checkGrounding(draft, artifacts);
    expect(r.numbers).toEqual([]);
    const reasons = new Set(r.ignored.map(i => i.reason));
    for (const reason of ['heading', 'list-marker', 'label', 'citation', 'year', 'identifier']) expect(reasons).toContain(reason);
  });

  test('a split ratio is grounded by either fraction', () => {
    const onlyTrain = { manifest: { train_fraction: 0.8 } };
    expect(checkGrounding('an 80/20 split', onlyTrain).ungrounded).toEqual([]);
    expect(checkGrounding('a 70/30 split', onlyTrain).ungrounded.map(n => n.text)).toEqual(['70', '30']);
  });

  test('a count is grounded only by a matching config value', () => {
    expect(checkGrounding('We use 3 seeds.', artifacts).ungrounded).toEqual([]);
    expect(checkGrounding('We use 5 seeds.', artifacts).ungrounded.map(n => n.text)).toEqual(['5']);
  });

  test('the references section and code blocks are not checked', () => {
    const draft = 'Accuracy 0.857.\n\n```\nlr = 0.123\n```\n\n## References\n\n- Smith, 2020, vol 12, pp. 33-47.';
    expect(checkGrounding(draft, artifacts).ungrounded).toEqual([]);
  });
});

describe('checkGrounding: accepted forms, each with an auditable derivation', () => {
  const results = {
    metrics: { method: { accuracy: 0.8571, f1: 0.8123 }, baseline: { accuracy: 0.7619, f1: 0.7001 } },
    seeds: { method: { accuracy: [0.85, 0.87, 0.88] } },
    summary: { method: { accuracy_mean: 0.86, accuracy_std: 0.01 } },
    table: '| run | accuracy | time |\n|---|---|---|\n| method | 85.71% | 14.2 s |\n| baseline | 76.19% | 3.25 s |',
    grid: {
      columns: ['lr', 'loss'],
      rows: [
        [0.001, 0.4321],
        [0.01, 0.3876]
      ]
    },
    manifest: { seeds: 3, n_train: 1050, n_test: 450 }
  };
  const only = (text: string) => {
    const r = checkGrounding(text, results);
    return { r, n: (shown: string) => r.numbers.find(x => x.text === shown)! };
  };

  test('the value as is and ×100, with or without a % sign, points or pp', () => {
    const { r, n } = only('Accuracy is 0.857, i.e. 85.7% (85.7 without the sign), F1 81.2 points.');
    expect(r.ungrounded).toEqual([]);
    expect(n('0.857').derivation).toMatchObject({ kind: 'value', scale: 1, sources: ['metrics.method.accuracy'] });
    expect(n('85.7%').derivation).toMatchObject({ kind: 'value', scale: 100, formula: 'metrics.method.accuracy = 0.8571 × 100 = 85.71' });
    expect(n('85.7').derivation).toMatchObject({ kind: 'value', scale: 100 });
    expect(n('81.2 points').derivation).toMatchObject({ kind: 'value', scale: 100, sources: ['metrics.method.f1'] });
  });

  test('a table cell, from a Markdown table string or a { columns, rows } table', () => {
    const { r, n } = only('One run takes 14.2 s against 3.25 s; the loss is 0.432 at the smaller learning rate.');
    expect(r.ungrounded).toEqual([]);
    expect(n('14.2').derivation).toMatchObject({ kind: 'table-cell', sources: ['table[row method, time]'] });
    expect(n('3.25').derivation).toMatchObject({ kind: 'table-cell', sources: ['table[row baseline, time]'] });
    expect(n('0.432').derivation).toMatchObject({ kind: 'table-cell', sources: ['grid[row 1, loss]'] });
  });

  test('mean ± std: both parts, as stored values or computed from the per-seed array', () => {
    const stored = only('Accuracy is 0.86 ± 0.01 over seeds.');
    expect(stored.r.ungrounded).toEqual([]);
    expect(stored.n('0.01').derivation).toMatchObject({ kind: 'value', sources: ['summary.method.accuracy_std'] });
    const computed = only('Accuracy is 0.867 ± 0.0125 over seeds (± 0.0153 with the sample std).');
    expect(computed.r.ungrounded).toEqual([]);
    expect(computed.n('0.867').derivation).toMatchObject({ kind: 'mean', sources: ['seeds.method.accuracy'] });
    expect(computed.n('0.0125').derivation).toMatchObject({ kind: 'std', formula: expect.stringContaining('population') });
    expect(computed.n('0.0153').derivation).toMatchObject({ kind: 'std', formula: 'std(seeds.method.accuracy), sample (n−1), n=3 = 0.0152753' });
    // A standard deviation is only accepted after ±, and an invented one is flagged.
    expect(only('Accuracy is 0.86 ± 0.013.').r.ungrounded.map(x => x.text)).toEqual(['0.013']);
    expect(only('It improves by 0.0125.').r.ungrounded.map(x => x.text)).toEqual(['0.0125']);
  });

  test('simple derived values of one quantity in two runs: difference, ratio, relative change, in either scale', () => {
    const { r, n } = only('The method gains 0.0952 (9.52 pp), a ratio of 1.125, i.e. 12.5% better; on F1 it gains 0.112.');
    expect(r.ungrounded).toEqual([]);
    expect(n('0.0952').derivation).toMatchObject({ kind: 'difference', scale: 1, sources: ['metrics.method.accuracy', 'metrics.baseline.accuracy'] });
    expect(n('9.52 pp').derivation).toMatchObject({
      kind: 'difference',
      scale: 100,
      formula: '|metrics.method.accuracy − metrics.baseline.accuracy| = |0.8571 − 0.7619| = 0.0952 × 100 = 9.52'
    });
    expect(n('1.125').derivation).toMatchObject({ kind: 'ratio', sources: ['metrics.method.accuracy', 'metrics.baseline.accuracy'] });
    expect(n('12.5%').derivation).toMatchObject({ kind: 'relative-change', scale: 100 });
    expect(n('0.112').derivation).toMatchObject({ kind: 'difference', sources: ['metrics.method.f1', 'metrics.baseline.f1'] });
    expect(r.derivations.map(d => [d.text, d.kind])).toEqual([
      ['0.0952', 'difference'],
      ['9.52 pp', 'difference'],
      ['1.125', 'ratio'],
      ['12.5%', 'relative-change'],
      ['0.112', 'difference']
    ]);
    // A derived value must be said as a comparison: stated as a plain value it is not one.
    expect(only('The accuracy is 0.0952.').r.ungrounded.map(x => x.text)).toEqual(['0.0952']);
    // Values of different quantities are not combined: rows of the training and the test split, two metrics of one run.
    expect(only('It trains on 600 more rows; accuracy exceeds F1 by 0.0448.').r.ungrounded.map(x => x.text)).toEqual(['600', '0.0448']);
  });

  test('invented numbers mixed among grounded ones are still flagged', () => {
    const draft = [
      'Accuracy is 0.857 (85.7%), up 0.0953 on the baseline, 12.6% better, a ratio of 1.13.',
      'The loss is 0.431; a run takes 14.2 s; the gap to the seed count is 2.14; about 5% of rows are noisy.',
      'The method gains 9.52 pp.'
    ].join('\n');
    const r = checkGrounding(draft, results);
    expect(r.ungrounded.map(x => [x.text, x.line])).toEqual([
      ['0.0953', 1],
      ['12.6%', 1],
      ['1.13', 1],
      ['0.431', 2],
      ['2.14', 2],
      ['5%', 2]
    ]);
    expect(r.derivations.map(d => d.text)).toEqual(['0.857', '85.7%', '14.2', '9.52 pp']);
  });
});
