"""The report's review: controls on every finding row the page lists (a leaking pair, a label
issue, an outlier), filters by kind, split and class, keys for speed, a progress count, and a
button that saves decisions.csv for `fit-head --decisions` / `grid-search --decisions`.

Everything is in the page: the rows carry their finding as JSON (`finding_attrs`), the script
below builds the controls from them, keeps the decisions in the browser's local storage under
the audit's identity (they survive a reload), and saves the file with a download link, so it
works from file:// with no server and no network. The pairs under each source are shown open,
and a filter hides the sources it leaves empty. The rows are the report's own capped tables,
so the page grows by a few hundred bytes per listed finding.

The file it saves: `# audit <identity> <store>`, then `id,action,value` lines (drop, relabel,
group, keep), each cell neutralised and quoted by `pipeline/tables.py`'s rule (a `'` before
every part a spreadsheet would run as a formula).
Per row, a drop wins over a relabel, and keep is written only for a row nothing else changed.
"""

from __future__ import annotations

import html
import json

STYLE = """
.reviewbar{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:8px 0;
z-index:2;font-size:14px;display:flex;gap:12px;align-items:center;flex-wrap:wrap}
tr.finding.cur{outline:2px solid #4c72b0} tr.finding.done{background:#f1f7ee}
td.ctl button{margin:1px;font-size:12px} td.ctl button.on{background:#4c72b0;color:#fff}
"""

# Per kind: (action, button text, key). "other" is the class menu of a label issue.
ACTIONS = {
    "pair": [["keep", "keep both", "k"], ["drop0", "drop a", "a"], ["drop1", "drop b", "d"],
             ["group", "same source", "g"]],
    "label": [["keep", "keep label", "k"], ["relabel", "relabel to suggested", "r"],
              ["drop", "drop", "d"]],
    "outlier": [["keep", "keep", "k"], ["drop", "drop", "d"]],
}

SCRIPT = r"""<script>(function(){
var M=JSON.parse(document.getElementById('review-meta').textContent),A=M.actions;
var KEY='featcache-review-'+M.identity,rows=[].slice.call(document.querySelectorAll('tr.finding'));
var saved={};try{saved=JSON.parse(localStorage.getItem(KEY)||'{}')||{};}catch(e){saved={};}
var cur=-1,$=function(i){return document.getElementById(i);};
function F(r){return JSON.parse(r.dataset.f);}
function fk(f){return f.k+':'+f.ids.join('|');}
function keep(){try{localStorage.setItem(KEY,JSON.stringify(saved));}catch(e){}}
function show(r){var f=F(r),d=saved[fk(f)];r.classList.toggle('done',!!d);
r.querySelectorAll('button').forEach(function(b){b.classList.toggle('on',!!d&&d.act===b.dataset.a);});
var s=r.querySelector('select');if(s){s.value=d&&d.act==='other'?d.v:'';}}
function progress(){var n=rows.filter(function(r){return saved[fk(F(r))];}).length;
$('review-progress').textContent=n+' of '+rows.length+' reviewed';}
function decide(r,act,v){var f=F(r);if(act==='clear')delete saved[fk(f)];
else saved[fk(f)]={act:act,v:act==='relabel'?f.sug:(v||''),ids:f.ids};keep();show(r);progress();}
rows.forEach(function(r,i){var f=F(r),td=document.createElement('td');td.className='ctl';
A[f.k].forEach(function(a){var b=document.createElement('button');b.type='button';b.dataset.a=a[0];
b.textContent=a[1]+' ('+a[2]+')';b.onclick=function(){go(i);decide(r,a[0]);};td.appendChild(b);});
if(f.k==='label'){var s=document.createElement('select'),o=new Option('relabel to...','');s.add(o);
M.classes.forEach(function(c){if(c!==f.c[0])s.add(new Option(c,c));});
s.onchange=function(){go(i);if(s.value)decide(r,'other',s.value);};td.appendChild(s);}
r.appendChild(td);show(r);var d=r.closest('details');if(d)d.open=true;});
function visible(r){return r.style.display!=='none';}
function go(i){if(cur>=0&&rows[cur])rows[cur].classList.remove('cur');cur=i;var r=rows[i];if(!r)return;
var d=r.closest('details');if(d)d.open=true;r.classList.add('cur');r.scrollIntoView({block:'center'});}
function step(k){for(var i=cur+k;i>=0&&i<rows.length;i+=k){if(visible(rows[i])){go(i);return;}}}
function fill(id,vals){var s=$(id);vals.sort().forEach(function(v){s.add(new Option(v,v));});
s.onchange=filter;}
var kinds={},splits={},classes={};rows.forEach(function(r){var f=F(r);kinds[f.k]=1;
f.s.forEach(function(x){splits[x]=1;});f.c.concat(f.sug?[f.sug]:[]).forEach(function(x){classes[x]=1;});});
fill('review-kind',Object.keys(kinds));fill('review-split',Object.keys(splits));
fill('review-class',Object.keys(classes));
function filter(){var k=$('review-kind').value,s=$('review-split').value,c=$('review-class').value;
rows.forEach(function(r){var f=F(r),ok=(!k||f.k===k)&&(!s||f.s.indexOf(s)>=0)&&
(!c||f.c.indexOf(c)>=0||f.sug===c);r.style.display=ok?'':'none';});
document.querySelectorAll('.source').forEach(function(b){var n=[].slice.call(
b.querySelectorAll('tr.finding')).filter(visible).length;b.style.display=n?'':'none';});}
document.addEventListener('keydown',function(e){var t=e.target.tagName;
if(t==='SELECT'||t==='INPUT'||e.ctrlKey||e.metaKey||e.altKey)return;
if(e.key==='n'||e.key==='ArrowDown'){step(1);}else if(e.key==='p'||e.key==='ArrowUp'){step(-1);}
else if(cur>=0&&rows[cur]){var f=F(rows[cur]),hit=A[f.k].filter(function(a){return a[2]===e.key;})[0];
if(e.key==='x')decide(rows[cur],'clear');else if(hit){decide(rows[cur],hit[0]);step(1);}else return;}
else return;e.preventDefault();});
var NUM=/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;
function cell(v,first){var p=String(v).split(/([;\t\r\n])/);for(var i=0;i<p.length;i+=2){
var r=p.slice(i).join('');if(/^['"]*[=+\-@\t\r]/.test(r)&&(i>0||first||!NUM.test(r)))p[i]="'"+p[i];}
v=p.join('');return /[,;"\r\n\t=+\-@]/.test(v)&&!NUM.test(v)?'"'+v.replace(/"/g,'""')+'"':v;}
function lines(){var per={},order=[];function g(i){if(!per[i]){per[i]={gs:[]};order.push(i);}return per[i];}
Object.keys(saved).forEach(function(k){var d=saved[k],ids=d.ids;
if(d.act==='keep')ids.forEach(function(i){g(i).keep=1;});
else if(d.act==='group')ids.forEach(function(i){g(i).gs.push(ids[0]);});
else if(d.act.indexOf('drop')===0)g(ids[d.act==='drop1'?1:0]).drop=1;
else g(ids[0]).relabel=d.v;});
var out=[];order.forEach(function(i){var p=per[i];if(p.drop)out.push([i,'drop','']);
else if(p.relabel)out.push([i,'relabel',p.relabel]);
p.gs.forEach(function(x){out.push([i,'group',x]);});
if(!p.drop&&!p.relabel&&!p.gs.length)out.push([i,'keep','']);});return out;}
$('review-save').onclick=function(){var text='# audit '+M.identity+' '+M.store+'\n'+
['id,action,value'].concat(lines().map(function(l){return l.map(function(c,i){
return cell(c,i===0);}).join(',');})).join('\n')+'\n';
var a=document.createElement('a');a.href=URL.createObjectURL(new Blob([text],{type:'text/csv'}));
a.download='decisions.csv';document.body.appendChild(a);a.click();a.remove();};
progress();})();</script>"""


def finding_attrs(kind: str, ids, splits, classes, suggested: str | None = None) -> str:
    """The attributes of one finding's table row: the script reads its ids, splits and classes
    from them (filters, controls, the saved lines)."""
    data = {"k": kind, "ids": list(ids), "s": list(splits), "c": list(classes)}
    if suggested is not None:
        data["sug"] = suggested
    return f" class='finding' data-f='{html.escape(json.dumps(data), quote=True)}'"


def review_bar(identity: str, store_name: str, class_names) -> str:
    """The filters, the progress count, the save button and what the page keeps where."""
    meta = {"identity": identity, "store": " ".join(store_name.split()),
            "classes": list(class_names), "actions": ACTIONS}
    esc = html.escape
    selects = "".join(f"<label>{name} <select id='review-{name}'><option value=''>all</option>"
                      "</select></label>" for name in ("kind", "split", "class"))
    return (f"<h2>Review</h2><p class='meta'>Decide each finding listed below with its buttons "
            "or keys: n / &darr; next, p / &uarr; previous, k keep, d drop (a pair: its b "
            "row), a drop a pair's a row, g same source (group a pair), r relabel to the "
            "suggested class, x undo. Your decisions are kept in this browser's local "
            f"storage for this audit ({esc(identity)}) and survive a reload. Save them and "
            "pass the file to <code>fit-head --decisions decisions.csv</code> (or grid-search): "
            "the store is never changed.</p>"
            f"<div class='reviewbar'>{selects}<span id='review-progress'></span>"
            "<button type='button' id='review-save'>Save decisions.csv</button></div>"
            "<script type='application/json' id='review-meta'>"
            + json.dumps(meta).replace("</", "<\\/") + "</script>")
