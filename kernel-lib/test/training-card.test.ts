/** The result card of lab.train(): the facts of the round and its loss curve. */
import { lossCurveSvg, trainingCard } from '../src/display';

describe('training result card', () => {
  const summary = {
    version: 'v2',
    steps: 4,
    examples: 5,
    examplesUsed: 4,
    finalLoss: 0.41234,
    meanAdvantage: -0.0123,
    losses: [1.2, 0.9, 0.6, 0.41234],
    wallMs: 83_400,
    parentVersion: 'v1'
  };

  test('shows the version, steps, examples used, final loss, time and what it continued, as HTML and Markdown', () => {
    const { html, markdown } = trainingCard(summary);
    expect(markdown).toBe(
      '**Planner adapter v2 trained** — the planner now uses it.\n\n' +
        '| steps | examples | final loss | mean advantage | time | continued from |\n| --- | --- | --- | --- | --- | --- |\n' +
        '| 4 | 4 of 5 | 0.4123 | -0.0123 | 1 min 23 s | v1 |\n\nLoss per step: 1.200, 0.900, 0.600, 0.412'
    );
    expect(html).toContain('Planner adapter v2 trained');
    expect(html).toContain('<td style="padding:1px 0">4 of 5</td>');
    const svg = Buffer.from(/base64,([A-Za-z0-9+/=]+)/.exec(html)![1], 'base64').toString('utf8');
    expect(svg).toBe(lossCurveSvg(summary.losses));
  });

  test('the loss curve runs from the first step (highest loss here, at the top) to the last, axes labelled', () => {
    const svg = lossCurveSvg([2, 1, 0.5]);
    const points = /points="([^"]+)"/
      .exec(svg)![1]
      .split(' ')
      .map(p => p.split(',').map(Number));
    expect(points).toHaveLength(3);
    expect(points[0][0]).toBeLessThan(points[2][0]);
    expect(points[0][1]).toBeLessThan(points[1][1]);
    expect(points[1][1]).toBeLessThan(points[2][1]);
    expect(svg).toContain('>step 1<');
    expect(svg).toContain('>step 3<');
    expect(svg).toContain('>2.00<');
    expect(svg).toContain('>0.500<');
  });

  test('a single step has no curve; text from a version is escaped', () => {
    const { html } = trainingCard({ ...summary, losses: [0.5], version: 'v<1>' });
    expect(html).not.toContain('<img');
    expect(html).toContain('v&#60;1&#62;');
  });
});
