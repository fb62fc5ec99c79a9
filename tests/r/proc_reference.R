# Reference numbers from R's pROC for tests/test_stats_proc.py.
#
# Usage: Rscript proc_reference.R ASAH_OUT.csv DATA1.csv [DATA2.csv ...] RESULT.json
#   1. writes pROC's aSAH data set to ASAH_OUT.csv as y (outcome Poor = 1), a = s100b,
#      b = ndka, c = as.numeric(wfns), part = gender (A = Male, B = Female);
#   2. for aSAH and every DATA csv (columns y, a, b, c, part), computes with pROC:
#      per score: AUC, DeLong var, DeLong CI; per pair: paired DeLong Z, p (3 alternatives),
#      CI of the difference; per score: unpaired DeLong (part A vs part B) D, df, p.
# Direction fixed to "<" and levels to c(0, 1) so pROC never flips a curve.
suppressPackageStartupMessages({
  library(pROC)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
asah_out <- args[1]
result_out <- args[length(args)]
data_files <- args[-c(1, length(args))]

data(aSAH)
asah <- data.frame(y = as.integer(aSAH$outcome == "Poor"), a = aSAH$s100b, b = aSAH$ndka,
                   c = as.numeric(aSAH$wfns),
                   part = ifelse(aSAH$gender == "Male", "A", "B"))
write.csv(asah, asah_out, row.names = FALSE)

fit <- function(y, x) roc(y, x, levels = c(0, 1), direction = "<", quiet = TRUE)
alternatives <- c("two.sided", "greater", "less")

analyse <- function(d) {
  scores <- c("a", "b", "c")
  rocs <- lapply(scores, function(s) fit(d$y, d[[s]]))
  names(rocs) <- scores
  single <- lapply(rocs, function(r) {
    ci <- ci.auc(r, conf.level = 0.95, method = "delong")
    list(auc = as.numeric(auc(r)), var = var(r, method = "delong"),
         ci = c(ci[1], ci[3]))
  })
  pairs <- list(c("a", "b"), c("a", "c"), c("b", "c"))
  paired <- lapply(pairs, function(p) {
    tests <- lapply(alternatives, function(alt) {
      t <- roc.test(rocs[[p[1]]], rocs[[p[2]]], method = "delong", paired = TRUE,
                    alternative = alt, conf.level = 0.95)
      list(z = unname(t$statistic), p = t$p.value, ci = as.numeric(t$conf.int))
    })
    names(tests) <- alternatives
    list(first = p[1], second = p[2], tests = tests)
  })
  in_a <- d$part == "A"
  unpaired <- lapply(scores, function(s) {
    ra <- fit(d$y[in_a], d[[s]][in_a])
    rb <- fit(d$y[!in_a], d[[s]][!in_a])
    tests <- lapply(alternatives, function(alt) {
      t <- roc.test(ra, rb, method = "delong", paired = FALSE, alternative = alt)
      list(d = unname(t$statistic), df = unname(t$parameter), p = t$p.value)
    })
    names(tests) <- alternatives
    list(score = s, tests = tests)
  })
  list(single = single, paired = paired, unpaired = unpaired)
}

results <- list(aSAH = analyse(asah))
for (f in data_files) {
  results[[basename(f)]] <- analyse(read.csv(f))
}
writeLines(toJSON(results, auto_unbox = TRUE, digits = NA), result_out)
