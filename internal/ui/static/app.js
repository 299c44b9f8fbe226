// Herd dashboard: the few live parts of otherwise plain server-rendered
// pages. Every page works without this file (forms post, links page);
// with it, job pages follow their job and telemetry streams in, both
// through the browser's EventSource (Server-Sent Events), and a few
// conveniences (copy buttons, select all, showing the fields of the job
// kind chosen). No framework; loaded as a file so that the
// Content-Security-Policy can forbid inline script.
'use strict';

function setState(root, text) {
  const el = root.querySelector('[data-stream-state]');
  if (el) el.textContent = text;
}

// A job page: update the counts on every progress event, without
// reloading the page; at the end, offer a reload for the final device
// records.
function followJob(section) {
  const es = new EventSource(section.dataset.jobEvents);
  const apply = (p) => {
    // Pause, resume and cancel follow what the job's status allows.
    for (const el of section.querySelectorAll('[data-action]')) {
      if (el.dataset.action in p) el.hidden = !p[el.dataset.action];
    }
    for (const el of section.querySelectorAll('[data-field]')) {
      const f = el.dataset.field;
      if (f === 'progress') {
        el.max = p.total;
        el.value = p.done;
      } else if (f in p) {
        // Counts are written as the server writes them (1,000,000).
        el.textContent = 'num' in el.dataset ? Number(p[f]).toLocaleString('en-US') : p[f];
        if (f === 'status') el.className = 'status-' + String(p.status).toLowerCase();
      }
    }
  };
  es.addEventListener('open', () => setState(section, 'Live: following the job as it runs.'));
  es.addEventListener('progress', (e) => apply(JSON.parse(e.data)));
  es.addEventListener('end', (e) => {
    apply(JSON.parse(e.data));
    es.close();
    const state = section.querySelector('[data-stream-state]');
    if (state) {
      state.textContent = 'The job has ended. ';
      const a = document.createElement('a');
      a.href = window.location.pathname + '#devices';
      a.textContent = 'Reload for the final device records';
      a.addEventListener('click', () => window.location.reload());
      state.appendChild(a);
    }
  });
  es.addEventListener('error', () => setState(section, 'Connection lost; reconnecting…'));
}

// Telemetry: newest message first, at most keep rows.
function followTelemetry(root, keep) {
  const rows = root.querySelector('[data-rows]');
  const withDevice = root.hasAttribute('data-show-device');
  const es = new EventSource(root.dataset.telemetry);
  const cell = (tr, text, code) => {
    const td = document.createElement('td');
    if (code) {
      const c = document.createElement('code');
      c.textContent = text;
      td.appendChild(c);
    } else {
      td.textContent = text;
    }
    tr.appendChild(td);
  };
  es.addEventListener('open', () => setState(root, 'Live: waiting for messages…'));
  es.addEventListener('message', (e) => {
    const m = JSON.parse(e.data);
    const tr = document.createElement('tr');
    cell(tr, m.time);
    if (withDevice) cell(tr, m.deviceId);
    cell(tr, m.body, true);
    cell(tr, m.properties ? JSON.stringify(m.properties) : '', true);
    rows.insertBefore(tr, rows.firstChild);
    while (rows.children.length > keep) rows.removeChild(rows.lastChild);
    setState(root, 'Live.');
  });
  es.addEventListener('dropped', (e) => setState(root, 'Live; ' + e.data + ' messages were skipped because this page fell behind.'));
  es.addEventListener('error', () => setState(root, 'Connection lost; reconnecting…'));
}

// Show only the fields of the job kind chosen (both are shown without
// JavaScript).
function jobKind(form) {
  const radios = form.querySelectorAll('input[name="type"]');
  const show = () => {
    let kind = '';
    for (const r of radios) if (r.checked) kind = r.dataset.kind;
    for (const fs of form.querySelectorAll('[data-kind-fields]')) {
      fs.hidden = kind !== '' && fs.dataset.kindFields !== kind;
    }
  };
  for (const r of radios) r.addEventListener('change', show);
  show();
}

document.addEventListener('DOMContentLoaded', () => {
  for (const s of document.querySelectorAll('[data-job-events]')) followJob(s);
  for (const t of document.querySelectorAll('[data-telemetry]')) followTelemetry(t, 100);
  for (const f of document.querySelectorAll('form')) {
    if (f.querySelector('input[name="type"][data-kind]')) jobKind(f);
  }
  for (const b of document.querySelectorAll('[data-copy]')) {
    b.addEventListener('click', async () => {
      const input = document.getElementById(b.dataset.copy);
      input.select();
      try {
        await navigator.clipboard.writeText(input.value);
        b.textContent = 'Copied';
      } catch {
        b.textContent = 'Selected: press Ctrl+C';
      }
    });
  }
  for (const all of document.querySelectorAll('[data-select-all]')) {
    all.addEventListener('change', () => {
      for (const c of all.form.querySelectorAll('input[type="checkbox"][name="id"]')) c.checked = all.checked;
    });
  }
});
