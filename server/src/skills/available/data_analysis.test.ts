/** data_analysis computes exact statistics from CSV text and markdown tables. */
import { describe, expect, it } from 'vitest';
import { analyse, describeAnalysis, toNumber } from './data_analysis.ts';

const CSV = `merchant,region,redemptions,revenue_hkd,joined
Kopi House,HK,120,"1,250.50",2024-01-15
Noodle Bar,SG,80,900,2024-03-02
Kopi House,HK,40,310.25,2024-02-10
Bake & Co,MY,,480,2024-05-20
Noodle Bar,SG,60,"1,000",2024-04-01
`;

describe('data_analysis', () => {
  it('counts rows and columns, types each column and computes numeric statistics', () => {
    const a = analyse(CSV);
    expect(a).toMatchObject({ format: 'csv', rows: 5, columns: 5 });
    const col = Object.fromEntries(a.column_stats.map((c) => [c.name, c]));
    expect(col.redemptions).toMatchObject({
      type: 'number',
      count: 4,
      missing: 1,
      sum: 300,
      mean: 75,
      min: 40,
      max: 120,
    });
    expect(col.revenue_hkd).toMatchObject({
      type: 'number',
      count: 5,
      sum: 3940.75,
      mean: 788.15,
      min: 310.25,
      max: 1250.5,
    });
    expect(col.joined).toMatchObject({ type: 'date', min: '2024-01-15', max: '2024-05-20' });
    expect(col.merchant).toMatchObject({ type: 'text', distinct: 3 });
    expect(col.merchant!.top!.slice(0, 2)).toEqual([
      { value: 'Kopi House', count: 2 },
      { value: 'Noodle Bar', count: 2 },
    ]);
  });

  it('groups and aggregates', () => {
    const sum = analyse(CSV, { group_by: 'merchant', value_column: 'revenue_hkd' }).group_by!;
    expect(sum.groups).toEqual([
      { group: 'Noodle Bar', value: 1900, rows: 2 },
      { group: 'Kopi House', value: 1560.75, rows: 2 },
      { group: 'Bake & Co', value: 480, rows: 1 },
    ]);
    const mean = analyse(CSV, {
      group_by: 'region',
      value_column: 'redemptions',
      aggregate: 'mean',
    }).group_by!;
    expect(mean.groups).toEqual([
      { group: 'HK', value: 80, rows: 2 },
      { group: 'SG', value: 70, rows: 2 },
      { group: 'MY', value: 0, rows: 1 },
    ]);
    const count = analyse(CSV, { group_by: 'region', aggregate: 'count' }).group_by!;
    expect(count.groups.map((g) => [g.group, g.value])).toEqual([
      ['HK', 2],
      ['SG', 2],
      ['MY', 1],
    ]);
    expect(() => analyse(CSV, { group_by: 'city', value_column: 'revenue_hkd' })).toThrow(
      /no column "city"/,
    );
  });

  it('reads a markdown table given in the chat', () => {
    const md = `| Month | Coupons issued | Redeemed |
|-------|---------------:|---------:|
| Jan   | 1,000          | 250      |
| Feb   | 1,500          | 450      |
| Mar   | 2,000          | 700      |`;
    const a = analyse(md);
    expect(a).toMatchObject({ format: 'markdown', rows: 3, columns: 3 });
    const col = Object.fromEntries(a.column_stats.map((c) => [c.name, c]));
    expect(col['Coupons issued']).toMatchObject({ type: 'number', sum: 4500, mean: 1500 });
    expect(col.Redeemed).toMatchObject({ sum: 1400, min: 250, max: 700 });
    expect(describeAnalysis(a)).toContain(
      'Coupons issued (number, 3 values): sum 4,500, mean 1,500, min 1,000, max 2,000',
    );
  });

  it('refuses data that is not a table', () => {
    expect(() => analyse('Please total my March sales')).toThrow(
      /not a table: it has no rows under the header row/,
    );
    expect(() => analyse('merchant,amount\n')).toThrow(/no rows under the header row/);
    expect(() => analyse('a,"b\n1,2')).toThrow(/not readable CSV/);
  });

  it('detects semicolon CSV and parses money-like cells', () => {
    const a = analyse('item;amount\nA;RM 10.50\nB;(2.50)\n');
    expect(a.column_stats[1]).toMatchObject({ type: 'number', sum: 8 });
    expect(toNumber('HK$1,234')).toBe(1234);
    expect(toNumber('12 apples')).toBeNull();
  });
});
