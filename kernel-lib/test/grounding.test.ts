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
