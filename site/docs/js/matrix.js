/* The matrix page: draws clauses x cells from the data embedded in the page, folds consecutive
 * cells with identical outcomes into expandable ranges (one row per range of FastAPI releases
 * that behave the same, their Starlette versions in a column), and applies the filters named in
 * the address (#clause=ATTACH-3,RES&behaviour=drop&from=0.100.0&to=0.120.0&line=0.27), so any
 * filtered view is a link. A cell is a glyph for its verdict and a short word for its behaviour;
 * the full label is its tooltip. Expanding a range keeps the scroll position. No framework;
 * every piece of data enters the page as textContent, never as markup, because labels come from
 * result files. */
(function () {
  "use strict";

  var holder = document.getElementById("bgm-matrix");
  var source = document.getElementById("bgm-matrix-data");
  var form = document.getElementById("bgm-filters");
  if (!holder || !source || !form) {
    return;
  }
  var data = JSON.parse(source.textContent);
  var KEYS = ["clause", "behaviour", "from", "to", "line"];
  var C = { ID: 0, KIND: 1, FA: 2, ST: 3, PY: 4, SECTION: 5, RELEASE: 6, STATE: 7, OUT: 8, CAND: 9 };
  var expanded = {};

  function el(name, attrs, text) {
    var node = document.createElement(name);
    Object.keys(attrs || {}).forEach(function (key) {
      node.setAttribute(key, attrs[key]);
    });
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  function option(select, value, text) {
    select.appendChild(el("option", { value: value }, text));
  }

  function lineOf(version) {
    return version ? version.split(".").slice(0, 2).join(".") : "";
  }

  /* Filters live in the hash (links to a view never reach the server); a query string works
   * too, for tools that drop fragments. */
  function readFilters() {
    var raw = location.hash.length > 1 ? location.hash.slice(1) : location.search.slice(1);
    var params = new URLSearchParams(raw);
    var filters = {};
    KEYS.forEach(function (key) {
      filters[key] = (params.get(key) || "").trim();
    });
    return filters;
  }

  function writeFilters(filters) {
    var parts = [];
    KEYS.forEach(function (key) {
      if (filters[key]) {
        parts.push(key + "=" + encodeURIComponent(filters[key]).replace(/%2C/gi, ","));
      }
    });
    var url = location.pathname + (parts.length ? "#" + parts.join("&") : "");
    history.replaceState(null, "", url);
    document.getElementById("bgm-permalink").href = url;
  }

  function fillForm() {
    /* Whole values only: a verdict, a short word, or a label as the results spell it. */
    var behaviours = {};
    data.outcomes.forEach(function (o) {
      behaviours[o[0]] = true;
      behaviours[o[2]] = true;
      if (o[1]) {
        behaviours[o[1]] = true;
      }
    });
    Object.keys(behaviours).sort(function (a, b) {
      return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
    }).forEach(function (b) {
      if (b) {
        option(form.elements.behaviour, b, b);
      }
    });
    data.releases.forEach(function (r) {
      option(form.elements.from, r, r);
      option(form.elements.to, r, r);
    });
    data.lines.forEach(function (l) {
      option(form.elements.line, l, l + ".x");
    });
    var list = document.getElementById("bgm-clause-list");
    data.clauses.forEach(function (c) {
      list.appendChild(el("option", { value: c[0] }, c[1]));
    });
  }

  function showFilters(filters) {
    KEYS.forEach(function (key) {
      var field = form.elements[key];
      field.value = filters[key];
      if (field.value !== filters[key] && field.tagName === "SELECT") {
        option(field, filters[key], filters[key]); /* a value this snapshot lacks: keep it */
        field.value = filters[key];
      }
    });
  }

  /* "ATTACH-3, RES" -> the indexes of ATTACH-3 and of every RES-n clause, and the names that
   * match no clause of this snapshot (said above the grid, never silently dropped). */
  function selectedClauses(text) {
    var tokens = text.toUpperCase().split(/[\s,]+/).filter(Boolean);
    var chosen = [];
    var used = {};
    data.clauses.forEach(function (c, i) {
      var hit = !tokens.length || tokens.some(function (t) {
        var match = c[0] === t || (!/\d/.test(t) && c[0].indexOf(t + "-") === 0);
        if (match) {
          used[t] = true;
        }
        return match;
      });
      if (hit) {
        chosen.push(i);
      }
    });
    var unknown = tokens.filter(function (t) {
      return !used[t];
    });
    if (tokens.length && !chosen.length) {
      chosen = data.clauses.map(function (c, i) {
        return i;
      });
    }
    return { columns: chosen, unknown: unknown };
  }

  function matchesBehaviour(outcome, wanted) {
    return outcome[0] === wanted || outcome[1] === wanted || outcome[2] === wanted;
  }

  function releaseIndex(version) {
    return data.releases.indexOf(version);
  }

  function keep(cell, filters, columns) {
    if (filters.line && lineOf(cell[C.ST]) !== filters.line) {
      return false;
    }
    if (filters.from || filters.to) {
      if (cell[C.KIND] === "starlette") {
        return false; /* a FastAPI range says nothing about pure Starlette cells */
      }
      var lo = filters.from ? releaseIndex(filters.from) : 0;
      var hi = filters.to ? releaseIndex(filters.to) : data.releases.length - 1;
      if (cell[C.RELEASE] < lo || cell[C.RELEASE] > hi) {
        return false;
      }
    }
    if (filters.behaviour) {
      if (cell[C.STATE] === filters.behaviour) {
        return true;
      }
      return columns.some(function (i) {
        return matchesBehaviour(data.outcomes[cell[C.OUT][i]], filters.behaviour);
      });
    }
    return true;
  }

  function primary(cell) {
    if (cell[C.KIND] === "candidate") {
      return cell[C.CAND] || cell[C.ID];
    }
    return cell[C.KIND] === "starlette" ? cell[C.ST] : cell[C.FA];
  }

  /* The Starlette column: the versions a row ran with ("0.27.0", "0.27.0 – 0.29.0"). */
  function starletteText(group) {
    if (group[0][C.KIND] === "starlette") {
      return "on its own";
    }
    var seen = [];
    group.forEach(function (cell) {
      if (cell[C.ST] && seen.indexOf(cell[C.ST]) < 0) {
        seen.push(cell[C.ST]);
      }
    });
    if (!seen.length) {
      return "";
    }
    return seen.length === 1 ? seen[0] : seen[0] + " – " + seen[seen.length - 1] +
      " (" + seen.length + ")";
  }

  function pythonText(group) {
    var seen = [];
    group.forEach(function (cell) {
      if (seen.indexOf(cell[C.PY]) < 0) {
        seen.push(cell[C.PY]);
      }
    });
    return "py" + seen.join(", ");
  }

  function outcomeCells(row, cell, columns) {
    columns.forEach(function (i) {
      var o = data.outcomes[cell[C.OUT][i]];
      var glyph = (data.glyphs || {})[o[3]] || "";
      var td = el("td", { "class": "bgm-o " + o[3] });
      td.appendChild(el("span", { "class": "bgm-g", "aria-hidden": "true" }, glyph));
      td.appendChild(document.createTextNode(" " + o[2]));
      td.title = data.clauses[i][0] + ": " + o[0] + (o[1] && o[1] !== o[2] ? " — " + o[1] : "");
      row.appendChild(td);
    });
  }

  function headCells(row, group) {
    row.appendChild(el("td", { "class": "bgm-st" }, starletteText(group)));
  }

  function cellRow(cell, columns, extraClass) {
    var row = el("tr", { "class": "bgm-row " + (extraClass || "") });
    var th = el("th", { scope: "row" });
    th.appendChild(el("a", { href: "cells/" + cell[C.ID] + ".html" }, primary(cell)));
    th.appendChild(el("small", {}, " " + pythonText([cell])));
    row.appendChild(th);
    headCells(row, [cell]);
    outcomeCells(row, cell, columns);
    return row;
  }

  function groupRows(group, columns, key) {
    var first = group[0];
    var last = group[group.length - 1];
    var open = !!expanded[key];
    var row = el("tr", { "class": "bgm-range" });
    var th = el("th", { scope: "row" });
    var span = primary(first) === primary(last) ? primary(first)
      : primary(first) + " – " + primary(last);
    var button = el("button", { type: "button", "aria-expanded": String(open),
      "data-key": key, title: (open ? "Fold " : "Show the ") + group.length + " cells" },
    (open ? "▾ " : "▸ ") + span);
    button.addEventListener("click", function () {
      expanded[key] = !expanded[key];
      render(key);
    });
    th.appendChild(button);
    th.appendChild(el("small", {}, " " + group.length + " cells · " + pythonText(group)));
    row.appendChild(th);
    headCells(row, group);
    outcomeCells(row, first, columns);
    var rows = [row];
    if (open) {
      group.forEach(function (cell) {
        rows.push(cellRow(cell, columns, "bgm-member"));
      });
    }
    return rows;
  }

  /* Redrawing replaces the grid; the page and the grid keep where they were scrolled to, and
   * the range button that was pressed keeps the focus. */
  function render(focusKey) {
    var old = holder.querySelector(".bgm-scroll");
    var keepScroll = old ? { top: old.scrollTop, left: old.scrollLeft } : null;
    var pageY = window.scrollY;
    holder.style.minHeight = holder.offsetHeight + "px"; /* no collapse while redrawing */
    draw();
    var scroller = holder.querySelector(".bgm-scroll");
    if (scroller && keepScroll) {
      scroller.scrollTop = keepScroll.top;
      scroller.scrollLeft = keepScroll.left;
    }
    holder.style.minHeight = "";
    window.scrollTo(window.scrollX, pageY);
    if (focusKey) {
      var button = holder.querySelector('button[data-key="' + focusKey.replace(/"/g, "") + '"]');
      if (button) {
        button.focus({ preventScroll: true });
      }
    }
  }

  function draw() {
    var filters = readFilters();
    showFilters(filters);
    var picked = selectedClauses(filters.clause);
    var columns = picked.columns;
    holder.textContent = "";
    if (!data.cells.length) {
      holder.appendChild(el("p", { "class": "bgm-empty" }, "No results yet: nothing to show."));
      holder.setAttribute("data-rendered", "0");
      return;
    }
    if (picked.unknown.length) {
      holder.appendChild(el("p", { "class": "bgm-notice", id: "bgm-unknown", role: "alert" },
        "No clause named " + picked.unknown.join(", ") + " in this snapshot's spec; " +
        (columns.length === data.clauses.length ? "showing every clause." :
          "showing the others.") + " The clause list names them all."));
    }
    var table = el("table", { "class": "bgm-grid" });
    var head = el("tr");
    head.appendChild(el("th", { "class": "bgm-corner", scope: "col" }, "Release"));
    head.appendChild(el("th", { "class": "bgm-corner bgm-st", scope: "col" }, "Starlette"));
    columns.forEach(function (i) {
      var c = data.clauses[i];
      var th = el("th", { "class": "bgm-clause", scope: "col",
        title: c[0] + " (" + c[4] + ") " + c[1] });
      th.appendChild(el("a", { href: "clauses/" + c[0] + ".html" }, c[0]));
      head.appendChild(th);
    });
    table.appendChild(el("thead")).appendChild(head);
    var shown = 0;
    var rowCount = 0;
    data.sections.forEach(function (section, s) {
      var cells = data.cells.filter(function (cell) {
        return cell[C.SECTION] === s && keep(cell, filters, columns);
      });
      if (!cells.length) {
        return;
      }
      shown += cells.length;
      var body = el("tbody");
      var title = el("tr", { "class": "bgm-section" });
      title.appendChild(el("th", { colspan: String(columns.length + 2), scope: "rowgroup" },
        section[1]));
      body.appendChild(title);
      var group = [];
      var groupKey = null;
      function flush() {
        if (!group.length) {
          return;
        }
        var rows = group.length === 1 ? [cellRow(group[0], columns)]
          : groupRows(group, columns, section[0] + "/" + group[0][C.ID]);
        rows.forEach(function (r) {
          body.appendChild(r);
        });
        rowCount += 1;
        group = [];
      }
      cells.forEach(function (cell) {
        var key = columns.map(function (i) {
          return cell[C.OUT][i];
        }).join(",");
        if (key !== groupKey) {
          flush();
          groupKey = key;
        }
        group.push(cell);
      });
      flush();
      table.appendChild(body);
    });
    var summary = el("p", { "class": "bgm-summary", id: "bgm-summary" },
      "Showing " + shown + " of " + data.cells.length + " cells in " + rowCount +
      " rows, " + columns.length + " of " + data.clauses.length + " clauses · snapshot " +
      data.snapshot);
    holder.appendChild(summary);
    if (shown) {
      var scroller = el("div", { "class": "bgm-scroll", tabindex: "0",
        "aria-label": "The matrix (scrolls both ways)" });
      scroller.appendChild(table);
      holder.appendChild(scroller);
    } else {
      holder.appendChild(el("p", { "class": "bgm-empty" }, "No cell matches these filters."));
    }
    holder.setAttribute("data-rendered", String(rowCount));
  }

  form.addEventListener("change", function () {
    var filters = {};
    KEYS.forEach(function (key) {
      filters[key] = form.elements[key].value.trim();
    });
    writeFilters(filters);
    render();
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault(); /* Enter in the clause field: apply, never reload */
    form.dispatchEvent(new Event("change"));
  });
  window.addEventListener("hashchange", function () {
    render();
  });
  fillForm();
  document.getElementById("bgm-permalink").href = location.pathname + location.hash;
  render();
})();
