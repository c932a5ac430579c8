/* learnroot-report: sortable tables and the image gallery. Written for learnroot (MIT licence); no
   library, no network: the data comes from data.js, loaded before this file. */
(function () {
  "use strict";
  var report = window.LEARNROOT_REPORT || {gallery: {columns: [], images: [], classes: []}, scores: []};

  /* ------------------------------------------------------------------ sortable tables */
  function sortKey(cell) {
    var text = cell.getAttribute("data-sort");
    if (text === null) { text = cell.textContent.trim(); }
    if (text === "") { return {empty: true}; }
    var number = Number(text);
    return isNaN(number) ? {text: text.toLowerCase()} : {number: number};
  }
  function compare(a, b) {
    if (a.empty || b.empty) { return a.empty === b.empty ? 0 : (a.empty ? 1 : -1); }
    if (a.number !== undefined && b.number !== undefined) { return a.number - b.number; }
    var x = a.text !== undefined ? a.text : String(a.number), y = b.text !== undefined ? b.text : String(b.number);
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  function sortTable(table, column, header) {
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell) { cell.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r, s) {
      var a = sortKey(r.cells[column]), b = sortKey(s.cells[column]);
      if (a.empty || b.empty) { return compare(a, b); }  /* empty cells last in both directions */
      return ascending ? compare(a, b) : compare(b, a);
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, column) {
      header.tabIndex = 0;
      header.title = "sort by this column";
      header.addEventListener("click", function () { sortTable(table, column, header); });
      header.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortTable(table, column, header); }
      });
    });
  });

  /* ------------------------------------------------------------------ the gallery */
  var gallery = report.gallery, scores = report.scores, assets = report.assets + "/";
  var state = {cls: "", correct: "", score: scores.length ? scores[0].name : "", order: "id", page: 0, size: 20,
               cell: 160};
  var arrows = {lower: " \u2193", higher: " \u2191"};

  function element(tag, attributes, text) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (key) { node.setAttribute(key, attributes[key]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  function select(id, label, options, value, onChange) {
    var wrap = element("label", {}, label + " ");
    var box = element("select", {id: id});
    options.forEach(function (option) {
      var item = element("option", {value: String(option[0])}, option[1]);
      if (String(option[0]) === String(value)) { item.selected = true; }
      box.appendChild(item);
    });
    box.addEventListener("change", function () { onChange(box.value); state.page = 0; render(); });
    wrap.appendChild(box);
    return wrap;
  }
  function format(value) {
    if (value === null || value === undefined) { return "\u2013"; }
    var size = Math.abs(value);
    return (value === 0 || (size >= 0.01 && size < 1000)) ? value.toFixed(3) : value.toExponential(2);
  }
  function spread(image) {
    var values = image.cells.map(function (cell) { return cell && cell.scores ? cell.scores[state.score] : null; })
      .filter(function (value) { return value !== null && value !== undefined; });
    return values.length < 2 ? -Infinity : Math.max.apply(null, values) - Math.min.apply(null, values);
  }
  function chosen() {
    var list = gallery.images.filter(function (image) {
      if (state.cls && image["class"] !== state.cls) { return false; }
      if (state.correct === "correct" && !image.correct) { return false; }
      if (state.correct === "incorrect" && image.correct) { return false; }
      return true;
    });
    if (state.order === "spread") {
      list = list.map(function (image, index) { return {image: image, key: spread(image), index: index}; })
        .sort(function (a, b) { return b.key - a.key || a.index - b.index; })
        .map(function (item) { return item.image; });
    }
    return list;
  }
  function picture(src, width, height, alt) {
    var factor = state.cell / Math.max(width || 1, height || 1);
    var image = element("img", {src: assets + src, alt: alt, loading: "lazy", decoding: "async",
                                width: String(Math.round(width * factor)), height: String(Math.round(height * factor))});
    if (factor > 1) { image.className = "pixelated"; }
    return image;
  }
  function hover(cell, label) {
    var lines = [label];
    if (cell.prediction !== undefined && cell.prediction !== null) {
      lines.push("prediction " + cell.prediction + ", explained class " + cell.target + ", status " + cell.status);
    }
    if (cell.scale !== undefined) { lines.push("max|R| = " + format(cell.scale)); }
    scores.forEach(function (score) {
      lines.push(score.name + (arrows[score.direction] || "") + ": " + format(cell.scores[score.name]));
    });
    return lines.join("\n");
  }
  function controls() {
    var box = document.getElementById("gallery-controls");
    box.textContent = "";
    box.appendChild(select("filter-class", "class", [["", "all"]].concat(gallery.classes.map(function (name) {
      return [name, name]; })), state.cls, function (value) { state.cls = value; }));
    box.appendChild(select("filter-correct", "prediction", [["", "all"], ["correct", "correct in every column"],
      ["incorrect", "incorrect somewhere"]], state.correct, function (value) { state.correct = value; }));
    box.appendChild(select("score", "score", scores.map(function (score) {
      return [score.name, score.name + (arrows[score.direction] || "")]; }), state.score,
      function (value) { state.score = value; }));
    box.appendChild(select("order", "order", [["id", "by id"], ["spread", "methods disagree most (spread of the score)"]],
      state.order, function (value) { state.order = value; }));
    box.appendChild(select("size", "per page", [[10, "10"], [20, "20"], [50, "50"], [100, "100"]], state.size,
      function (value) { state.size = Number(value); }));
    box.appendChild(select("cell", "image size", [[96, "small"], [160, "medium"], [224, "large"]], state.cell,
      function (value) { state.cell = Number(value); }));
  }
  function pager(total, pages) {
    var bar = element("div", {"class": "pager"});
    var previous = element("button", {type: "button", id: "previous-page"}, "\u2190 previous");
    var next = element("button", {type: "button", id: "next-page"}, "next \u2192");
    previous.disabled = state.page === 0;
    next.disabled = state.page >= pages - 1;
    previous.addEventListener("click", function () { state.page -= 1; render(); });
    next.addEventListener("click", function () { state.page += 1; render(); });
    bar.appendChild(previous);
    bar.appendChild(element("span", {id: "gallery-count"}, total + " image(s), page " + (pages ? state.page + 1 : 0)
      + " of " + pages));
    var score = scores.filter(function (item) { return item.name === state.score; })[0];
    if (score) { bar.appendChild(element("span", {"class": "legend"}, "below the maps: " + score.name
      + (arrows[score.direction] || "") + "; hover a map for every score")); }
    bar.appendChild(next);
    return bar;
  }
  function render() {
    var root = document.getElementById("gallery");
    if (!root) { return; }
    var list = chosen(), pages = Math.ceil(list.length / state.size);
    state.page = Math.max(0, Math.min(state.page, pages - 1));
    var shown = list.slice(state.page * state.size, (state.page + 1) * state.size);
    var table = element("table", {"class": "gallery", id: "gallery-table"});
    var head = element("tr");
    ["image", "input"].concat(gallery.columns).forEach(function (title) { head.appendChild(element("th", {}, title)); });
    table.appendChild(element("thead")).appendChild(head);
    var body = element("tbody");
    shown.forEach(function (image) {
      var row = element("tr", {"data-id": image.id});
      var name = element("th", {scope: "row"});
      name.appendChild(element("div", {"class": "id"}, image.id));
      name.appendChild(element("div", {}, "class " + (image["class"] || "?") + (image.correct ? "" : " \u2717")));
      if (state.order === "spread") {
        var width = spread(image);
        name.appendChild(element("div", {"class": "spread"}, "spread " + (isFinite(width) ? format(width) : "\u2013")));
      }
      row.appendChild(name);
      var input = element("td", {"class": "input"});
      if (image.input) { input.appendChild(picture(image.input, image.w, image.h, "input " + image.id)); }
      row.appendChild(input);
      image.cells.forEach(function (cell, index) {
        var td = element("td", {"class": "map"});
        if (!cell) { td.appendChild(element("span", {"class": "missing"}, "not in this run")); }
        else {
          td.title = hover(cell, gallery.columns[index]);
          if (cell.src) { td.appendChild(picture(cell.src, cell.w, cell.h, gallery.columns[index] + " " + image.id)); }
          else { td.appendChild(element("span", {"class": "missing"}, cell.note || "no map")); }
          td.appendChild(element("div", {"class": "score"}, state.score ? format(cell.scores[state.score]) : ""));
        }
        row.appendChild(td);
      });
      body.appendChild(row);
    });
    table.appendChild(body);
    root.textContent = "";
    root.appendChild(pager(list.length, pages));
    root.appendChild(table);
  }
  controls();
  render();
  window.LEARNROOT_READY_MS = performance.now();
  document.body.setAttribute("data-ready", "1");
}());
